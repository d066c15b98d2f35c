"""After a goodbye or a ban the peer does not want our output (review): the close used to be
graceful all the same, leaving what the kernel held for the peer as an orphan bounded only by
TCP_USER_TIMEOUT, which the kernel restarts whenever the peer's window opens for the head
segment (~6.4 KB/s kept a 4 MiB orphan ~11 min), so ask, goodbye, reconnect piled orphans up.
Now such a close (flush=False) resets the socket when more than UNWANTED_MAX still waits in
asyncio's buffer or the kernel's send queue; with less it stays graceful and a ban's
Disconnect (its reason) still reaches the peer. Over the fake transport and socket of
test_write_stall."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from netdiag.node.messages import Blocks, Disconnect
from netdiag.node.protocol import encode_frame
from netdiag.node.transport import UNWANTED_MAX
from tests.unit.node import test_write_stall as ws

pytestmark = pytest.mark.usefixtures("fake_kernel_queue")  # conftest


def goodbye_after(waiting: int) -> tuple[bool, bool, str | None]:
    """The peer asks (``waiting`` bytes go to the kernel, unread), then says goodbye: was the
    socket reset, did it linger 0, and the close reason."""
    lingers: list[Any] = []

    async def main() -> tuple[bool, bool, str | None]:
        conn, transport, _handler, task = await ws.open_conn()
        assert transport.sock is not None
        transport.sock.setsockopt = lambda *a: lingers.append(a)  # type: ignore[method-assign]
        transport.reading = False
        transport.room = 8 << 20  # the kernel takes it all: nothing waits in the node
        conn.send(Blocks(1, [bytes(waiting)]))
        assert conn.write_held == 0 and transport.sock.inflight >= waiting
        transport.reader.feed_data(encode_frame(Disconnect("bye")))
        await ws.ended(task)
        linger = any(a[:2] == (socket.SOL_SOCKET, socket.SO_LINGER) for a in lingers)
        return transport.aborted, linger, conn.close_reason

    return asyncio.run(main())


def test_a_goodbye_with_megabytes_still_in_the_kernel_resets_the_socket() -> None:
    aborted, linger, reason = goodbye_after(2 << 20)
    assert aborted and linger, "the kernel's queue was left to an orphan"
    assert reason is not None and reason.startswith("peer said goodbye")


def test_a_goodbye_with_little_left_closes_gracefully() -> None:
    aborted, linger, _reason = goodbye_after(UNWANTED_MAX // 4)
    assert not aborted and not linger


def test_a_ban_drops_megabytes_waiting_in_the_node_with_a_reset() -> None:
    async def main() -> None:
        conn, transport, _handler, task = await ws.open_conn()
        transport.reading = False  # all waits in asyncio's buffer
        conn.send(Blocks(1, [bytes(1 << 20)]))
        conn.close("banned: test", flush=False)  # what policy.ban does
        assert transport.aborted and not transport.buffer
        assert await ws.ended(task)

    asyncio.run(main())


def test_a_ban_with_nothing_waiting_is_graceful_and_sends_its_reason() -> None:
    async def main() -> None:
        conn, transport, _handler, task = await ws.open_conn()
        conn.close("banned: test", flush=False)
        assert not transport.aborted and transport.closing
        assert transport.remote._peer_said_bye, "the peer never got the ban's Disconnect"
        assert await ws.ended(task)

    asyncio.run(main())


def eof_after(waiting: int) -> tuple[bool, bool, str | None]:
    """The peer asks (``waiting`` bytes go to the kernel, unread), then half-closes (FIN, no
    goodbye; review 2): was the socket reset, did the node write more, and the close reason."""

    async def main() -> tuple[bool, bool, str | None]:
        conn, transport, _handler, task = await ws.open_conn()
        assert transport.sock is not None
        transport.reading = False
        transport.room = 8 << 20  # the kernel takes it all: nothing waits in the node
        conn.send(Blocks(1, [bytes(waiting)]))
        inflight = transport.sock.inflight
        assert conn.write_held == 0 and inflight >= waiting
        transport.reader.feed_eof()
        await ws.ended(task)
        wrote_more = transport.sock.inflight > inflight + 1024 or len(transport.buffer) > 0
        return transport.aborted, wrote_more, conn.close_reason

    return asyncio.run(main())


def test_a_half_close_after_asking_resets_like_a_goodbye() -> None:
    aborted, wrote_more, reason = eof_after(2 << 20)
    assert aborted, "a half-closed peer's output was left to an orphan"
    assert not wrote_more
    assert reason == "peer closed the connection"


def test_a_half_close_with_little_left_closes_gracefully() -> None:
    aborted, _wrote_more, reason = eof_after(UNWANTED_MAX // 4)
    assert not aborted
    assert reason == "peer closed the connection"
