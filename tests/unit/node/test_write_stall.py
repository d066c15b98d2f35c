"""A peer that does not read its output is cut (issue: sync_amplification's sessions that ask for
block ranges and never read were never ended): output that waits in the node and that the socket
takes none of for ``write_stall_timeout_s`` cuts the peer, as does more than the write-buffer
cap; the cut aborts the socket, so what the node held for the peer is freed at once (a plain
close keeps it until the peer reads it), and reports the limit. A slow reader that takes a
little at a time is not stalled. Over a fake transport whose peer reads what the test lets it."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from netdiag.node.crypto import Identity
from netdiag.node.messages import Blocks, Ping
from netdiag.node.protocol import PeerProtocol, State
from netdiag.node.transport import Connection

NET, GEN = "nd-test", b"\x03" * 32
STALL_S = 0.3  # short for the test: the behaviour, not the default, is under test
ANSWER = Blocks(1, [bytes(4000)])  # one sync answer's worth of output


class FakeTransport:
    """What the node writes goes to ``remote`` (the peer's protocol) while it reads; otherwise
    it waits in ``buffer`` (asyncio's write buffer), of which ``take`` lets the peer read some."""

    def __init__(self, remote: PeerProtocol, reader: asyncio.StreamReader) -> None:
        self.remote = remote
        self.reader = reader
        self.reading = True
        self.buffer = bytearray()
        self.closing = False
        self.aborted = False

    def deliver(self, data: bytes) -> None:
        self.remote.receive_data(data)
        out = self.remote.data_to_send()
        if out:
            self.reader.feed_data(out)

    def write(self, data: bytes) -> None:
        if self.reading and not self.buffer:
            self.deliver(data)
        else:
            self.buffer += data

    def take(self, n: int) -> None:
        """The peer reads ``n`` bytes of what waits."""
        self.buffer = self.buffer[n:]

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
    stall_s: float = STALL_S, cap: int = 64 << 20
) -> tuple[Connection, FakeTransport, Handler, asyncio.Task[None]]:
    reader = asyncio.StreamReader()
    remote = PeerProtocol(Identity.generate(), NET, GEN, 0)
    remote.start()
    transport = FakeTransport(remote, reader)
    conn = Connection(
        reader, cast(asyncio.StreamWriter, FakeWriter(transport)),
        PeerProtocol(Identity.generate(), NET, GEN, 0), False,
        msg_rate=1e6, bytes_rate=1e12, max_write_buffer=cap,
        handshake_timeout_s=30, idle_timeout_s=60, write_stall_timeout_s=stall_s,
    )  # fmt: skip
    reader.feed_data(remote.data_to_send())  # the peer's Hello
    handler = Handler()
    task = asyncio.create_task(conn.run(handler))
    for _ in range(500):
        if conn.is_open and remote.state is State.OPEN:
            break
        await asyncio.sleep(0.01)
    assert conn.is_open and remote.state is State.OPEN, "handshake over the fake did not complete"
    return conn, transport, handler, task


async def ended(task: asyncio.Task[None], within_s: float = 30.0) -> bool:
    try:
        await asyncio.wait_for(asyncio.shield(task), within_s)
    except TimeoutError:
        return False
    return True


def test_a_peer_that_stops_reading_is_cut_after_the_stall_timeout_and_its_output_freed() -> None:
    async def main() -> None:
        conn, transport, handler, task = await open_conn()
        transport.reading = False
        conn.send(ANSWER)
        conn.send(ANSWER)
        assert transport.get_write_buffer_size() > 0 and conn.is_open  # waiting, not yet cut
        assert await ended(task), "a peer that reads nothing was never cut"
        assert handler.limits == ["write_stall"]
        assert "does not read" in (conn.close_reason or "")
        assert handler.closed == [conn.close_reason]
        assert transport.aborted and transport.get_write_buffer_size() == 0  # freed, not kept

    asyncio.run(main())


def test_a_slow_reader_that_keeps_taking_bytes_is_not_cut() -> None:
    async def main() -> None:
        conn, transport, handler, task = await open_conn()
        transport.reading = False
        loop = asyncio.get_running_loop()
        end = loop.time() + 6 * STALL_S  # several stall timeouts
        while loop.time() < end:
            conn.send(ANSWER)  # more output than it reads: the backlog grows
            transport.take(100)  # but it reads a little every turn
            await asyncio.sleep(STALL_S / 10)
        assert conn.is_open and not task.done(), conn.close_reason
        assert handler.limits == []
        assert await ended(task)  # then it stops taking anything at all: cut
        assert handler.limits == ["write_stall"]

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
        conn, transport, handler, task = await open_conn(stall_s=0)
        transport.reading = False
        conn.send(ANSWER)
        await asyncio.sleep(4 * STALL_S)
        assert conn.is_open and handler.limits == []
        conn.close("done")
        transport.abort()  # the test's own cleanup: the buffer would wait for a reader
        assert await ended(task)

    asyncio.run(main())


def test_output_the_socket_takes_at_once_starts_no_watch() -> None:
    async def main() -> None:
        conn, _transport, handler, task = await open_conn()
        for i in range(20):
            conn.send(Ping(i))  # the peer reads: nothing waits, nothing to watch
        assert conn._stall_timer is None
        await asyncio.sleep(2 * STALL_S)
        assert conn.is_open and handler.limits == []
        conn.close("done")
        assert await ended(task)

    asyncio.run(main())


def test_a_close_that_waits_for_a_peer_that_never_reads_is_aborted_after_the_stall_timeout() -> (
    None
):
    async def main() -> None:
        conn, transport, handler, task = await open_conn()
        transport.reading = False
        conn.send(ANSWER)
        conn.close("banned")  # a graceful close: asyncio keeps the buffer until it is sent
        assert transport.closing and not transport.aborted and transport.buffer
        assert await ended(task), "the close waited for ever"
        assert transport.aborted and not transport.buffer
        assert handler.closed == ["banned"]

    asyncio.run(main())
