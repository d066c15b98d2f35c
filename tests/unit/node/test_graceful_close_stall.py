"""A graceful close (ban, idle, shutdown) whose last output an honest slow reader is
still receiving -- acknowledging bytes all along -- is reset (SO_LINGER 0: the kernel's send
queue dropped too) at a fixed write_stall_timeout_s after the close, although the open
connection's own stall check would keep that reader (progress = bytes acknowledged); review2
finding. Now the close keeps that stall check running and resets only a reader that acknowledges
nothing for write_stall_timeout_s."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from netdiag.node.limits import MIN_PEER_RATE
from netdiag.node.stallwatch import CLOSE_WAIT_MAX
from tests.unit.node import test_write_stall as ws

PER_STALL = int(MIN_PEER_RATE * ws.STALL_S)  # what a reader at the floor gets per stall timeout


def test_a_graceful_close_to_a_reader_that_keeps_acknowledging_is_not_reset() -> None:
    lingers: list[Any] = []

    async def main() -> None:
        conn, transport, _handler, task = await ws.open_conn(stall_s=ws.REAL_STALL_S)
        assert transport.sock is not None
        transport.sock.setsockopt = lambda *a: lingers.append(a)  # type: ignore[method-assign]
        transport.reading = False
        for _ in range(50):
            conn.send(ws.ANSWER)
        conn.close("idle")  # graceful: the buffer is still going out
        loop = asyncio.get_running_loop()
        end = loop.time() + 4 * ws.REAL_STALL_S
        while loop.time() < end and not transport.aborted:
            transport.take(500)  # the kernel takes a little ...
            transport.ack(500)  # ... and the peer acknowledges it: steady progress
            await asyncio.sleep(ws.REAL_STALL_S / 10)
        assert not transport.aborted, "reset while the peer was acknowledging our last output"
        assert transport.buffer, "the test's reader got everything: make it slower"
        assert not [a for a in lingers if a[:2] == (socket.SOL_SOCKET, socket.SO_LINGER)]
        transport.abort()
        await ws.ended(task)

    asyncio.run(main())


def test_a_graceful_close_to_a_reader_that_acknowledges_nothing_is_reset_after_the_stall() -> None:
    # On the injected clock: acknowledging keeps the closing socket however long it takes;
    # write_stall_timeout_s with nothing acknowledged resets it (SO_LINGER 0, then abort).
    lingers: list[Any] = []

    async def main() -> None:
        clock = ws.Clock()
        conn, transport, handler, task = await ws.open_conn(clock=clock)
        assert transport.sock is not None
        transport.sock.setsockopt = lambda *a: lingers.append(a)  # type: ignore[method-assign]
        transport.reading = False
        for _ in range(250):  # ~1 MB
            conn.send(ws.ANSWER)
        conn.close("banned")
        for _ in range(10):  # ten stall timeouts in all, at the floor rate (MIN_PEER_RATE)
            transport.take(PER_STALL)
            transport.ack(PER_STALL)
            clock.now += 0.9 * ws.STALL_S
            conn.check_stall()
            assert not transport.aborted, "reset while the peer was acknowledging"
        clock.now += 0.9 * ws.STALL_S  # from here on the peer acknowledges nothing
        conn.check_stall()
        assert not transport.aborted, "reset before the stall timeout"
        clock.now += 0.1 * ws.STALL_S
        conn.check_stall()
        assert transport.aborted and not transport.buffer
        assert [a for a in lingers if a[:2] == (socket.SOL_SOCKET, socket.SO_LINGER)]
        assert handler.limits == []  # closed already: nothing more to report
        assert await ws.ended(task)
        assert handler.closed == ["banned"]

    asyncio.run(main())


def test_a_graceful_close_keeps_the_stall_mark_of_output_already_waiting() -> None:
    # Output already waiting unacknowledged before the close: the close does not restart the
    # stall clock, so the peer gets write_stall_timeout_s in all, not that much more.
    async def main() -> None:
        clock = ws.Clock()
        conn, transport, handler, task = await ws.open_conn(clock=clock)
        transport.reading = False
        conn.send(ws.ANSWER)
        clock.now += 0.6 * ws.STALL_S
        conn.check_stall()
        conn.close("idle")
        clock.now += 0.3 * ws.STALL_S
        conn.check_stall()
        assert not transport.aborted, "reset before the stall timeout"
        clock.now += 0.1 * ws.STALL_S
        conn.check_stall()
        assert transport.aborted
        assert await ws.ended(task)
        assert handler.closed == ["idle"] and handler.limits == []

    asyncio.run(main())


def test_a_graceful_close_ends_after_its_overall_bound_however_the_peer_acknowledges() -> None:
    # A peer that acknowledges enough before every stall check would hold the closed
    # connection's last output and socket for a long time (its budget and slot are already
    # released): the close is reset after CLOSE_WAIT_MAX stall timeouts, not before.
    async def main() -> None:
        clock = ws.Clock()
        conn, transport, handler, task = await ws.open_conn(clock=clock)
        transport.reading = False
        for _ in range(700):  # ~2.8 MB: more than the reader gets within the bound
            conn.send(ws.ANSWER)
        conn.close("idle")
        steps = 0
        while not transport.aborted and steps < 4 * CLOSE_WAIT_MAX:
            transport.take(PER_STALL)
            transport.ack(PER_STALL)  # at the floor rate or faster: enough progress every check
            clock.now += 0.5 * ws.STALL_S
            conn.check_stall()
            steps += 1
        assert transport.aborted, "a trickling peer held the closed connection for ever"
        assert steps == 2 * CLOSE_WAIT_MAX  # at the bound (0.5 stall timeouts a step), not before
        assert await ws.ended(task)
        assert handler.closed == ["idle"] and handler.limits == []

    asyncio.run(main())


def test_a_graceful_close_to_a_reader_dripping_a_segment_per_check_is_reset_at_the_stall() -> None:
    # Under the floor (MIN_PEER_RATE): a segment per check is not progress, so the closing
    # socket is reset at the stall timeout, not kept until CLOSE_WAIT_MAX.
    async def main() -> None:
        clock = ws.Clock()
        conn, transport, _handler, task = await ws.open_conn(clock=clock)
        transport.reading = False
        for _ in range(50):
            conn.send(ws.ANSWER)
        conn.close("idle")
        steps = 0
        while not transport.aborted and steps < 4 * CLOSE_WAIT_MAX:
            transport.take(1460)
            transport.ack(1460)
            clock.now += 0.5 * ws.STALL_S
            conn.check_stall()
            steps += 1
        # its average falls under the floor past one timeout of slack (review 2): ~1.5 timeouts
        assert transport.aborted and steps == 3
        assert await ws.ended(task)

    asyncio.run(main())
