"""The write-stall cut over real loopback TCP, with the node's defaults for the unsent bound
(32 KiB, lifted for every sync answer) and the stall timeout shortened through the node's config.
Review finding: progress used to be the kernel taking bytes from asyncio's buffer, and with the
bound lifted the kernel takes more only after ~1/3 of a send buffer of megabytes drained, which
a reader taking 100 KB/s needs ~15 s for — so that honest reader was cut at 10 s. Progress is now
what the peer acknowledges: the slow reader is kept for several timeouts, a reader that never
reads is cut (with a reset it sees at once), and the slow reader is cut too once it stops.
Behaviour and order only."""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import Awaitable, Callable

import pytest

from netdiag.node.config import load_config
from netdiag.node.crypto import Identity
from netdiag.node.messages import Blocks
from netdiag.node.protocol import HandshakeComplete, PeerProtocol
from netdiag.node.sockets import tcp_bytes_acked
from netdiag.node.transport import Connection
from tests.unit.node import test_write_stall as ws

NET, GEN = "nd-test", b"\x03" * 32
STALL_S = 3.0  # the reader below reads every 0.05 s: a ratio of 60
ANSWER = Blocks(7, [bytes(16_000)] * 8)  # a 128 KB sync answer: lifts the bound
BACKLOG = 2 << 20  # the node keeps this much waiting for each peer
READ_BYTES, READ_EVERY_S = 5_000, 0.05  # 100 KB/s


TCP_ESTABLISHED = 1  # tcpi_state


def tcp_state(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]


class Handler(ws.Handler):
    """The fake-transport tests' handler, also keeping (peer, limit) in order across
    connections."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, str]] = []  # (peer, limit), in order, from all connections

    def on_limit(self, conn: Connection, limit: str) -> None:
        super().on_limit(conn, limit)
        self.events.append((str(conn.remote_port), limit))


class Peer:
    """A peer that completes the handshake, then reads at ``rate`` (0: never)."""

    def __init__(self) -> None:
        self.proto = PeerProtocol(Identity.generate(), NET, GEN, 0)
        self.reading = True
        self.got = 0
        self.reset = False

    async def connect(self, port: int) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)  # before connect
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        self.port = str(sock.getsockname()[1])
        self.r, self.w = await asyncio.open_connection(sock=sock)
        self.proto.start()
        self.w.write(self.proto.data_to_send())
        while True:
            data = await asyncio.wait_for(self.r.read(65536), 20)
            assert data, "the node closed the connection during the handshake"
            evs = self.proto.receive_data(data)
            self.w.write(self.proto.data_to_send())
            if any(isinstance(e, HandshakeComplete) for e in evs):
                return

    async def read_slowly(self) -> None:
        try:
            while True:
                await asyncio.sleep(READ_EVERY_S)
                if not self.reading:
                    continue
                data = await self.r.read(READ_BYTES)
                if not data:
                    self.reset = True
                    return
                self.got += len(data)
        except ConnectionError:
            self.reset = True


def acceptor(
    handler: Handler, conns: dict[str, Connection]
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    """The node side of a loopback scenario: a Connection per accepted socket with the node's
    own write-stall timeout (STALL_S through the config) and limits no test traffic reaches,
    recorded in ``conns`` by the peer's port, run with ``handler``."""
    cfg = load_config(
        None,
        {"NETDIAG_NODE_WRITE_STALL_TIMEOUT_S": str(STALL_S)},
        {"data_dir": "d", "genesis": "g"},
    )

    async def accept(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        c = Connection(
            r, w, PeerProtocol(Identity.generate(), NET, GEN, 0), False,
            msg_rate=1e6, bytes_rate=1e12, max_write_buffer=64 << 20,
            handshake_timeout_s=10, idle_timeout_s=600,
            notsent_lowat=cfg.notsent_lowat_bytes,
            write_stall_timeout_s=cfg.write_stall_timeout_s,
        )  # fmt: skip
        conns[str(c.remote_port)] = c
        await c.run(handler)

    return accept


async def teardown(
    tasks: list[asyncio.Task[None]],
    conns: dict[str, Connection],
    peers: tuple[Peer, ...],
    server: asyncio.Server,
) -> None:
    """End a loopback scenario: its tasks, the node's connections (reset), the peers' sockets
    and the server (shared with test_kernel_queue_loopback)."""
    for t in tasks:
        t.cancel()
    for c in conns.values():
        c.close("test over", flush=False, abort=True)
    for p in peers:
        p.w.transport.abort()
    server.close()
    await server.wait_closed()
    await asyncio.sleep(0.1)


async def scenario() -> tuple[list[tuple[str, str]], dict[str, str], dict[str, int]]:
    handler = Handler()
    conns: dict[str, Connection] = {}
    tasks: list[asyncio.Task[None]] = []
    accept = acceptor(handler, conns)

    async def serve() -> None:  # sync answers keep BACKLOG waiting for every open peer
        while True:
            for c in list(conns.values()):
                while c.is_open and c.write_held < BACKLOG:
                    c.send(ANSWER)
            await asyncio.sleep(0.05)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    slow, deaf = Peer(), Peer()
    await slow.connect(port)
    await deaf.connect(port)
    loop = asyncio.get_running_loop()
    tasks.append(loop.create_task(slow.read_slowly()))
    tasks.append(loop.create_task(serve()))
    began = loop.time()
    marks: dict[str, str] = {}
    try:
        # the reader that never reads is cut (generous bound: a loaded host is slow) ...
        while not any(p == deaf.port for p, _ in handler.events):
            assert loop.time() - began < 20 * STALL_S, "a peer that never reads was not cut"
            await asyncio.sleep(0.1)
        marks["deaf_cut_with_slow"] = "open" if conns[slow.port].is_open else "closed"
        # the cut is a reset: the kernel drops what it held, the peer's socket leaves
        # ESTABLISHED (a plain close would queue a FIN behind the unread data: no news for it)
        sock = deaf.w.get_extra_info("socket")
        cut_at = loop.time()
        while tcp_state(sock) == TCP_ESTABLISHED and loop.time() - cut_at < 20:
            await asyncio.sleep(0.05)
        marks["deaf_socket"] = "established" if tcp_state(sock) == TCP_ESTABLISHED else "reset"
        # ... while the slow reader, kept busy for at least 3 timeouts, is not
        while loop.time() - began < 3 * STALL_S:
            await asyncio.sleep(0.1)
        marks["slow_after_3_timeouts"] = "open" if conns[slow.port].is_open else "closed"
        marks["slow_lowat_lifted"] = str(conns[slow.port]._out.lifted)
        got_before_stop = slow.got
        slow.reading = False  # now it stops reading: cut
        handler.events.append((slow.port, "stopped_reading"))
        stopped = loop.time()
        while conns[slow.port].is_open:
            assert loop.time() - stopped < 20 * STALL_S, "a reader that stopped was not cut"
            await asyncio.sleep(0.1)
    finally:
        await teardown(tasks, conns, (slow, deaf), server)
    names = {slow.port: "slow", deaf.port: "deaf"}
    return [(names[p], what) for p, what in handler.events], marks, {"got": got_before_stop}


NO_BYTES_ACKED = "kernel tcp_info lacks tcpi_bytes_acked (Linux < 4.1)"


def require_bytes_acked() -> None:
    """Skip where the kernel's TCP_INFO is too short to hold tcpi_bytes_acked (Linux < 4.1): the
    node then counts bytes the socket takes instead, which these tests are not about."""
    with socket.socket() as s:
        if tcp_bytes_acked(s) is None:
            pytest.skip(NO_BYTES_ACKED)


def test_a_slow_reader_through_the_lifted_bound_is_kept_and_a_reader_that_never_reads_is_cut() -> (
    None
):
    require_bytes_acked()
    events, marks, counts = asyncio.run(scenario())
    assert marks["slow_lowat_lifted"] == "True"  # the case under test: sync answers lift it
    assert marks["deaf_cut_with_slow"] == "open"
    assert marks["deaf_socket"] == "reset"
    assert marks["slow_after_3_timeouts"] == "open", events
    assert counts["got"] > 0
    assert events == [("deaf", "write_stall"), ("slow", "stopped_reading"), ("slow", "write_stall")]


def test_bytes_acked_is_read_from_tcp_info_on_this_kernel() -> None:
    require_bytes_acked()
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    cli = socket.create_connection(srv.getsockname())
    s, _ = srv.accept()
    with srv, cli, s:
        before = tcp_bytes_acked(s)
        if before is None:
            pytest.skip(NO_BYTES_ACKED)
        s.sendall(bytes(10_000))
        got = 0
        while got < 10_000:
            got += len(cli.recv(65536))
        after = before
        for _ in range(200):  # the ACK follows the data on loopback almost at once
            after = tcp_bytes_acked(s) or 0
            if after - before >= 10_000:
                break
            time.sleep(0.01)
        assert after - before == 10_000
        assert tcp_bytes_acked(None) is None


def test_a_kernel_without_bytes_acked_skips_with_the_exact_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys.modules[__name__], "tcp_bytes_acked", lambda sock: None)
    with pytest.raises(pytest.skip.Exception, match=r"lacks tcpi_bytes_acked \(Linux < 4\.1\)"):
        require_bytes_acked()
