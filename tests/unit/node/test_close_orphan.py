"""A graceful close (ban, idle, goodbye, shutdown) to a peer that never reads left the kernel an
orphan for ever: once asyncio closes the fd, what the kernel still holds for the peer stays
queued in FIN-WAIT-1, and a peer that answers zero-window probes keeps it there (measured on
this kernel: 2 MB still held 300 s after the close) — outside the node's slots, budget and
checks, so a peer could ask, say goodbye, reconnect and repeat. The close now sets
TCP_USER_TIMEOUT to the write-stall timeout first, so the kernel aborts such an orphan. Over
the fake socket (the option is set, or not), then over real loopback TCP (the orphan is gone
within a generous bound; on the code before, it stays)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from netdiag.measure import sockdiag
from netdiag.node.crypto import Identity
from netdiag.node.messages import Blocks
from netdiag.node.protocol import PeerProtocol
from netdiag.node.transport import Connection
from tests.unit.node import test_write_stall as ws
from tests.unit.node import test_write_stall_loopback as wl

USER_TIMEOUT = (socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)


def _opts(stall_s: float, how: str) -> list[Any]:
    opts: list[Any] = []

    async def main() -> None:
        conn, transport, _handler, task = await ws.open_conn(stall_s=stall_s)
        assert transport.sock is not None
        transport.sock.setsockopt = lambda *a: opts.append(a)  # type: ignore[method-assign]
        transport.reading = False
        transport.room = 1 << 20
        conn.send(ws.ANSWER)
        if how == "cut":
            conn.cut("write_stall", "test")
        else:
            conn.close("banned")
        transport.abort()  # the test's own cleanup
        await ws.ended(task)

    asyncio.run(main())
    return [a[2] for a in opts if a[:2] == USER_TIMEOUT]


def test_a_graceful_close_bounds_what_the_kernel_keeps_by_the_stall_timeout() -> None:
    assert _opts(ws.STALL_S, "close") == [int(ws.STALL_S * 1000)]
    assert _opts(0, "close") == []  # stall check off: nothing bounded, as before
    assert _opts(ws.STALL_S, "cut") == []  # a cut resets (SO_LINGER 0): no orphan to bound


STALL_S = 1.0
ANSWER = Blocks(7, [bytes(16_000)] * 8)  # 128 KB


def node_socket(port: int, peer_port: int) -> sockdiag.TcpConn | None:
    for c in sockdiag.snapshot(ports=[port]):
        if c.lport == port and c.rport == peer_port:
            return c
    return None


async def orphan_scenario() -> dict[str, str]:
    conns: list[Connection] = []
    handler = wl.Handler()

    async def accept(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        c = Connection(
            r, w, PeerProtocol(Identity.generate(), ws.NET, ws.GEN, 0), False,
            msg_rate=1e6, bytes_rate=1e12, max_write_buffer=64 << 20,
            handshake_timeout_s=10, idle_timeout_s=600, write_stall_timeout_s=STALL_S,
        )  # fmt: skip
        conns.append(c)
        await c.run(handler)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    peer = wl.Peer()  # completes the handshake, then never reads
    marks: dict[str, str] = {}
    loop = asyncio.get_running_loop()
    try:
        await peer.connect(port)
        for _ in range(100):
            if conns:
                break
            await asyncio.sleep(0.05)
        conn = conns[0]
        for _ in range(4):  # 512 KB: the kernel takes it all, nothing waits in the node
            conn.send(ANSWER)
        marks["held_in_node"] = str(conn.write_held)
        conn.close("banned")  # graceful, before the stall watch's first check
        await asyncio.sleep(0.2)  # asyncio closes the fd on its next turn
        seen = node_socket(port, int(peer.port))
        marks["after_close"] = f"{seen.state} {seen.wqueue}" if seen else "gone"
        closed = loop.time()
        while node_socket(port, int(peer.port)) is not None and loop.time() - closed < 30:
            await asyncio.sleep(0.2)
        marks["orphan"] = "held" if node_socket(port, int(peer.port)) else "freed"
    finally:
        peer.w.transport.abort()
        server.close()
        await server.wait_closed()
    return marks


def test_a_graceful_close_to_a_peer_that_never_reads_leaves_no_orphan_holding_its_output() -> None:
    wl.require_bytes_acked()
    marks = asyncio.run(orphan_scenario())
    assert marks["held_in_node"] == "0", marks
    state, queued = marks["after_close"].split()  # the case: an orphan holding our output
    assert state == "FIN_WAIT1" and int(queued) > 100_000, marks
    assert marks["orphan"] == "freed", marks
