"""A peer that does not read its output is cut (issue: sync_amplification's sessions that ask for
block ranges and never read were never ended): output that waits in the node while the peer
acknowledges none of our bytes for ``write_stall_timeout_s`` cuts the peer, as does more than the
write-buffer cap; the cut aborts the socket, so what the node held for the peer is freed at once
(a plain close keeps it until the peer reads it), and reports the limit. A slow reader that
acknowledges a little at a time is not stalled — also while the kernel takes nothing from the
node (the unsent bound lifted for a sync answer: the kernel takes more only once a third of a
large send buffer has drained; review finding). Over a fake transport and socket whose peer
reads and acknowledges what the test lets it, with an injected clock: the test, not the host's
scheduling, decides how much time passes."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import Any, cast

import pytest

from netdiag.node.crypto import Identity
from netdiag.node.limits import MIN_PEER_RATE
from netdiag.node.messages import Blocks, Ping
from netdiag.node.protocol import PeerProtocol, State
from netdiag.node.sockets import TCP_INFO_BYTES_ACKED, TCP_INFO_BYTES_ACKED_AT, queued_bytes
from netdiag.node.transport import Connection

NET, GEN = "nd-test", b"\x03" * 32
STALL_S = 10.0  # on the injected clock
REAL_STALL_S = 0.3  # where the loop's own timers run (only "it ends", never "it did not")
ANSWER = Blocks(1, [bytes(4000)])  # one sync answer's worth of output


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeSocket:
    """The kernel's side: bytes taken from asyncio's buffer and not yet acknowledged
    (``inflight``: the kernel's send queue, what SIOCOUTQ reports, see ``fake_queued_bytes``),
    and ``acked``, what TCP_INFO reports as tcpi_bytes_acked."""

    def __init__(self) -> None:
        self.inflight = 0
        self.acked = 0

    def getsockopt(self, level: int, opt: int, size: int = 0) -> bytes:
        if (level, opt) != (socket.IPPROTO_TCP, socket.TCP_INFO):
            raise OSError("not modelled")
        raw = bytearray(max(size, TCP_INFO_BYTES_ACKED_AT + TCP_INFO_BYTES_ACKED.size))
        TCP_INFO_BYTES_ACKED.pack_into(raw, TCP_INFO_BYTES_ACKED_AT, self.acked)
        return bytes(raw[:size])

    def setsockopt(self, *args: Any) -> None:
        pass

    def fileno(self) -> int:
        return -1


def fake_queued_bytes(sock: object) -> int:
    """SIOCOUTQ of a FakeSocket (the kernel's send queue); the real ioctl for anything else."""
    return sock.inflight if isinstance(sock, FakeSocket) else queued_bytes(cast(Any, sock))


pytestmark = pytest.mark.usefixtures("fake_kernel_queue")  # conftest


class FakeTransport:
    """What the node writes goes to ``remote`` (the peer's protocol) while it reads; otherwise
    it waits in ``buffer`` (asyncio's write buffer), of which ``take`` lets the kernel take
    some and ``ack`` lets the peer acknowledge some of what the kernel took. ``room``: what
    the kernel's send buffer takes at once from a write while the peer does not read (0: none,
    all waits in asyncio's buffer). ``tcp=False``: a socket without TCP_INFO (the node then
    counts what the kernel takes)."""

    def __init__(self, remote: PeerProtocol, reader: asyncio.StreamReader, tcp: bool) -> None:
        self.remote = remote
        self.reader = reader
        self.sock = FakeSocket() if tcp else None
        self.reading = True
        self.room = 0
        self.buffer = bytearray()
        self.closing = False
        self.aborted = False

    def deliver(self, data: bytes) -> None:
        self.remote.receive_data(data)
        out = self.remote.data_to_send()
        if out:
            self.reader.feed_data(out)
        if self.sock is not None:
            self.sock.acked += len(data)

    def write(self, data: bytes) -> None:
        if self.reading and not self.buffer:
            self.deliver(data)
            return
        if self.sock is not None and not self.buffer and self.room:
            n = min(len(data), self.room)  # the kernel takes it, unacknowledged
            self.room -= n
            self.sock.inflight += n
            data = data[n:]
        self.buffer += data

    def take(self, n: int) -> None:
        """The kernel takes ``n`` bytes of what waits (sends them; not yet acknowledged)."""
        n = min(n, len(self.buffer))
        self.buffer = self.buffer[n:]
        if self.sock is not None:
            self.sock.inflight += n

    def ack(self, n: int) -> None:
        """The peer reads and acknowledges ``n`` bytes of what the kernel took."""
        assert self.sock is not None
        n = min(n, self.sock.inflight)
        self.sock.inflight -= n
        self.sock.acked += n

    def get_write_buffer_size(self) -> int:
        return len(self.buffer)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        # asyncio's close: the socket stays until the buffer has been sent
        self.closing = True
        if not self.buffer:
            self.reader.feed_eof()

    def abort(self) -> None:
        self.closing = self.aborted = True
        self.buffer = bytearray()
        self.reader.feed_eof()


class FakeWriter:
    def __init__(self, transport: FakeTransport) -> None:
        self.transport = transport

    def write(self, data: bytes) -> None:
        self.transport.write(data)

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def close(self) -> None:
        self.transport.close()

    async def wait_closed(self) -> None:
        while not self.transport.reader.at_eof():
            await asyncio.sleep(0.01)

    async def drain(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "socket":
            return self.transport.sock
        return ("10.0.0.9", 4000) if name == "peername" else default


class Handler:
    def __init__(self) -> None:
        self.limits: list[str] = []
        self.closed: list[str] = []

    def on_open(self, conn: Connection) -> None:
        return None

    def on_message(self, conn: Connection, msg: object, size: int) -> None:
        pass

    def on_violation(self, conn: Connection, v: object) -> None:
        pass

    def on_limit(self, conn: Connection, limit: str) -> None:
        self.limits.append(limit)

    def on_closed(self, conn: Connection, reason: str) -> None:
        self.closed.append(reason)


async def open_conn(
    stall_s: float = STALL_S,
    cap: int = 64 << 20,
    tcp: bool = True,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[Connection, FakeTransport, Handler, asyncio.Task[None]]:
    reader = asyncio.StreamReader()
    remote = PeerProtocol(Identity.generate(), NET, GEN, 0)
    remote.start()
    transport = FakeTransport(remote, reader, tcp)
    conn = Connection(
        reader, cast(asyncio.StreamWriter, FakeWriter(transport)),
        PeerProtocol(Identity.generate(), NET, GEN, 0), False,
        msg_rate=1e6, bytes_rate=1e12, max_write_buffer=cap,
        handshake_timeout_s=30, idle_timeout_s=60, write_stall_timeout_s=stall_s,
        clock=clock,
    )  # fmt: skip
    reader.feed_data(remote.data_to_send())  # the peer's Hello
    handler = Handler()
    task = asyncio.create_task(conn.run(handler))
    for _ in range(500):
        if conn.is_open and remote.state is State.OPEN:
            break
        await asyncio.sleep(0.01)
    assert conn.is_open and remote.state is State.OPEN, "handshake over the fake did not complete"
    # the handshake's writes started a stall watch; the peer has them all, so its first check
    # (its timer on a real loop) stops it: a test's first write starts a fresh one
    conn.check_stall()
    assert conn._stall_timer is None
    return conn, transport, handler, task


async def open_not_reading(
    room: int = 0, stall_s: float = STALL_S, clock: Callable[[], float] = time.monotonic
) -> tuple[Connection, FakeTransport, Handler, asyncio.Task[None]]:
    """``open_conn``, then the peer stops reading; the kernel's send buffer takes up to
    ``room`` bytes of writes at once (0: everything waits in asyncio's buffer)."""
    conn, transport, handler, task = await open_conn(stall_s=stall_s, clock=clock)
    assert transport.sock is not None
    transport.reading = False
    transport.room = room
    return conn, transport, handler, task


def cut_at_the_stall_timeout(conn: Connection, clock: Clock, handler: Handler) -> None:
    """The peer acknowledges nothing from now on: still open 0.9 stall timeouts later, cut as
    ``write_stall`` at the timeout."""
    clock.now += 0.9 * STALL_S
    conn.check_stall()
    assert conn.is_open, "cut before the stall timeout"
    clock.now += 0.1 * STALL_S
    conn.check_stall()
    assert not conn.is_open and handler.limits == ["write_stall"]


async def ended(task: asyncio.Task[None], within_s: float = 30.0) -> bool:
    try:
        await asyncio.wait_for(asyncio.shield(task), within_s)
    except TimeoutError:
        return False
    return True


def test_a_peer_that_acknowledges_nothing_is_cut_after_the_stall_timeout_and_freed() -> None:
    async def main() -> None:
        clock = Clock()
        conn, transport, handler, task = await open_conn(clock=clock)
        transport.reading = False
        conn.send(ANSWER)
        conn.send(ANSWER)
        assert transport.get_write_buffer_size() > 0 and conn._stall_timer is not None
        transport.take(3000)  # the kernel takes some; the peer acknowledges none of it
        cut_at_the_stall_timeout(conn, clock, handler)
        assert "does not read" in (conn.close_reason or "")
        assert await ended(task), "the cut peer's connection did not end"
        assert handler.closed == [conn.close_reason]
        assert transport.aborted and transport.get_write_buffer_size() == 0  # freed, not kept

    asyncio.run(main())


def test_a_slow_reader_is_not_cut_while_it_acknowledges_bytes_though_the_kernel_takes_none() -> (
    None
):
    # The review's case: a sync answer lifts the unsent bound; the kernel then takes nothing
    # from asyncio's buffer for ~15 s while the peer steadily receives 100 KB/s. Progress is
    # what the peer acknowledges, so it is kept (at MIN_PEER_RATE or faster); once it
    # acknowledges nothing, it is cut.
    async def main() -> None:
        clock = Clock()
        conn, transport, handler, task = await open_conn(clock=clock)
        transport.reading = False
        conn.send(Blocks(1, [bytes(2 << 20)]))  # a large answer: the bound lifted ...
        transport.take(2 << 20)  # ... it is in the kernel, then the kernel takes nothing more
        taken = conn.taken
        for _ in range(20):  # 18 stall timeouts of injected time
            conn.send(ANSWER)  # more output than it reads: the backlog grows
            clock.now += 0.9 * STALL_S
            transport.ack(int(MIN_PEER_RATE * STALL_S))  # it receives at the floor rate
            conn.check_stall()
            assert conn.is_open, conn.close_reason
        assert conn.taken == taken and handler.limits == []
        cut_at_the_stall_timeout(conn, clock, handler)  # it stops acknowledging
        assert await ended(task)

    asyncio.run(main())


def test_bytes_the_kernel_takes_are_not_progress_when_the_peer_acknowledges_none() -> None:
    # A peer whose window closed: the kernel may still take bytes into free send-buffer
    # space, but nothing reaches the peer; the stall timeout runs from the last acknowledgement.
    async def main() -> None:
        clock = Clock()
        conn, transport, handler, task = await open_conn(clock=clock)
        transport.reading = False
        for _ in range(4):
            conn.send(ANSWER)
        transport.take(1000)
        transport.ack(1000)
        conn.check_stall()  # progress seen now
        began = clock.now
        while conn.is_open:
            clock.now += 0.3 * STALL_S
            transport.take(100)
            conn.check_stall()
            assert clock.now - began < 2 * STALL_S, "a peer that acknowledged nothing kept"
        assert clock.now - began >= STALL_S  # not before the timeout
        assert handler.limits == ["write_stall"]
        assert await ended(task)

    asyncio.run(main())


def test_without_tcp_info_the_kernel_taking_bytes_is_progress() -> None:
    # A socket that does not report acknowledgements (not TCP): what it takes is the measure.
    async def main() -> None:
        clock = Clock()
        conn, transport, handler, task = await open_conn(tcp=False, clock=clock)
        transport.reading = False
        conn.send(Blocks(1, [bytes(1 << 20)]))
        for _ in range(10):
            conn.send(ANSWER)
            clock.now += 0.9 * STALL_S
            transport.take(int(MIN_PEER_RATE * STALL_S))  # at the floor rate
            conn.check_stall()
        assert conn.is_open and handler.limits == []
        clock.now += STALL_S
        conn.check_stall()
        assert handler.limits == ["write_stall"]
        assert await ended(task)

    asyncio.run(main())


def test_the_watch_timer_itself_cuts_a_peer_that_reads_nothing() -> None:
    # The loop's own timer and clock (a short timeout): only "it ends" is asserted.
    async def main() -> None:
        conn, transport, handler, task = await open_conn(stall_s=REAL_STALL_S)
        transport.reading = False
        conn.send(ANSWER)
        assert await ended(task), "a peer that reads nothing was never cut"
        assert handler.limits == ["write_stall"] and transport.aborted

    asyncio.run(main())


def test_output_over_the_cap_is_cut_at_once_and_freed() -> None:
    async def main() -> None:
        conn, transport, handler, task = await open_conn(stall_s=0, cap=10_000)
        transport.reading = False
        conn.send(ANSWER)
        assert conn.is_open  # 4 KB waits: under the cap
        conn.send(ANSWER)
        conn.send(ANSWER)
        assert not conn.is_open and "write buffer over limit" in (conn.close_reason or "")
        assert handler.limits == ["write_buffer"]
        assert transport.aborted and transport.get_write_buffer_size() == 0
        assert await ended(task)

    asyncio.run(main())


def test_with_the_stall_timeout_off_waiting_output_alone_does_not_cut() -> None:
    async def main() -> None:
        clock = Clock()
        conn, transport, handler, task = await open_conn(stall_s=0, clock=clock)
        transport.reading = False
        conn.send(ANSWER)
        assert conn._stall_timer is None  # nothing watches
        clock.now += 100 * STALL_S
        conn.check_stall()
        assert conn.is_open and handler.limits == []
        conn.close("done")
        transport.abort()  # the test's own cleanup: the buffer would wait for a reader
        assert await ended(task)

    asyncio.run(main())


def test_output_the_peer_acknowledges_at_once_stops_the_watch_at_its_next_check() -> None:
    async def main() -> None:
        clock = Clock()
        conn, _transport, handler, task = await open_conn(clock=clock)
        for i in range(20):
            conn.send(Ping(i))  # the peer reads: a write starts a watch (no syscall) ...
        assert conn._stall_timer is not None
        conn.check_stall()  # ... which finds nothing waiting, in the node or the kernel: stops
        assert conn._stall_timer is None
        clock.now += 2 * STALL_S
        conn.check_stall()
        assert conn.is_open and handler.limits == []
        conn.close("done")
        assert await ended(task)

    asyncio.run(main())


def test_a_close_that_waits_for_a_peer_that_never_reads_is_aborted_after_the_stall_timeout() -> (
    None
):
    async def main() -> None:
        conn, transport, handler, task = await open_conn(stall_s=REAL_STALL_S)
        transport.reading = False
        conn.send(ANSWER)
        conn.close("banned")  # a graceful close: asyncio keeps the buffer until it is sent
        assert transport.closing and not transport.aborted and transport.buffer
        assert await ended(task), "the close waited for ever"
        assert transport.aborted and not transport.buffer
        assert handler.closed == ["banned"]

    asyncio.run(main())
