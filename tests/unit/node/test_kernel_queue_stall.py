"""A non-reading peer whose output all sits in the kernel's send queue is cut too (issue 17,
attack suite): a peer that asks for less than the kernel's send buffer plus its own receive
window, then stops reading, leaves the node's own buffers empty while megabytes wait,
unacknowledged, in the kernel's queue; the stall check used to run only while the node's buffer
held something, so only the 60 s idle timeout ended such a session. The watch now also reads
the kernel's queue (SIOCOUTQ: unacknowledged + unsent) when nothing waits in the node: no
acknowledged byte while it is non-empty for the stall timeout cuts the peer; acknowledging
MIN_PEER_RATE x the timeout resets the clock (an honest slow reader is kept); once both are
empty the watch stops.
Over the fake transport and socket of test_write_stall (the kernel's queue is the fake socket's
``inflight``), on an injected clock."""

from __future__ import annotations

import asyncio

import pytest

from netdiag.node.limits import MIN_PEER_RATE
from netdiag.node.messages import Blocks
from tests.unit.node import test_write_stall as ws

pytestmark = pytest.mark.usefixtures("fake_kernel_queue")  # conftest


def test_a_peer_whose_output_waits_only_in_the_kernel_is_cut_after_the_stall_timeout() -> None:
    async def main() -> None:
        clock = ws.Clock()
        # the kernel's send buffer takes every byte at once
        conn, transport, handler, task = await ws.open_not_reading(1 << 20, clock=clock)
        assert transport.sock is not None
        for _ in range(3):
            conn.send(ws.ANSWER)
        assert conn.write_held == 0 and transport.sock.inflight > 0  # all in the kernel
        ws.cut_at_the_stall_timeout(conn, clock, handler)
        assert "kernel's queue" in (conn.close_reason or ""), conn.close_reason
        assert await ws.ended(task), "the cut peer's connection did not end"
        assert transport.aborted  # a reset: the kernel drops its queue (SO_LINGER 0)

    asyncio.run(main())


def test_a_slow_reader_acknowledging_what_waits_in_the_kernel_is_kept_until_it_stops() -> None:
    async def main() -> None:
        clock = ws.Clock()
        conn, transport, handler, task = await ws.open_not_reading(4 << 20, clock=clock)
        assert transport.sock is not None
        conn.send(Blocks(1, [bytes(2 << 20)]))  # all in the kernel: its buffer takes it
        for _ in range(20):  # 18 stall timeouts of injected time
            clock.now += 0.9 * ws.STALL_S
            transport.ack(int(MIN_PEER_RATE * ws.STALL_S))  # at the floor rate: progress
            conn.check_stall()
            assert conn.is_open, conn.close_reason
        assert conn.write_held == 0 and transport.sock.inflight > 0 and handler.limits == []
        ws.cut_at_the_stall_timeout(conn, clock, handler)  # it stops acknowledging
        assert await ws.ended(task)

    asyncio.run(main())


def test_the_watch_stops_once_the_peer_acknowledged_everything_and_a_write_restarts_it() -> None:
    async def main() -> None:
        clock = ws.Clock()
        conn, transport, handler, task = await ws.open_not_reading(1 << 20, clock=clock)
        assert transport.sock is not None
        conn.send(ws.ANSWER)
        assert conn._stall_timer is not None
        clock.now += 0.5 * ws.STALL_S
        transport.ack(transport.sock.inflight)  # the peer got it all: the kernel's queue empties
        conn.check_stall()
        assert conn._stall_timer is None, "an idle connection keeps a timer running"
        clock.now += 5 * ws.STALL_S  # idle a long time: nothing is watched, nothing cut
        assert conn.is_open and handler.limits == []
        conn.send(ws.ANSWER)  # the next write starts a fresh watch, from now
        assert conn._stall_timer is not None
        ws.cut_at_the_stall_timeout(conn, clock, handler)
        assert await ws.ended(task)

    asyncio.run(main())


def test_the_watch_timer_itself_cuts_a_peer_whose_output_waits_only_in_the_kernel() -> None:
    # The loop's own timer and clock (a short timeout): only "it ends" is asserted.
    async def main() -> None:
        conn, transport, handler, task = await ws.open_not_reading(1 << 20, ws.REAL_STALL_S)
        conn.send(ws.ANSWER)
        assert conn.write_held == 0
        assert await ws.ended(task, 40 * ws.REAL_STALL_S), "output in the kernel never cut"
        assert handler.limits == ["write_stall"] and transport.aborted

    asyncio.run(main())
