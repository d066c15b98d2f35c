"""The transport counts every byte a connection puts on and takes off the socket — the TLS
handshake and records included — so a discovery probe's whole cost can be reported: the two
ends of one connection agree, and the same exchange costs more with TLS than without."""

from __future__ import annotations

import asyncio
from pathlib import Path

from netdiag.node.crypto import Identity
from netdiag.node.messages import KadPing
from netdiag.node.protocol import PeerProtocol
from netdiag.node.tls import client_context, server_context, write_certificate
from netdiag.node.tlsio import TlsSession
from netdiag.node.transport import Connection

NET, GEN = "nd-test", b"\x02" * 32


class Handler:
    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.got: list[object] = []

    def on_open(self, conn: Connection) -> None:
        self.opened.set()
        return None

    def on_message(self, conn: Connection, msg: object, size: int) -> None:
        self.got.append(msg)

    def on_violation(self, conn: Connection, v: object) -> None:
        pass

    def on_limit(self, conn: Connection, limit: str) -> None:
        pass

    def on_closed(self, conn: Connection, reason: str) -> None:
        pass


def conn(r: asyncio.StreamReader, w: asyncio.StreamWriter, ident: Identity,
         outbound: bool, tls: TlsSession | None) -> Connection:  # fmt: skip
    return Connection(
        r, w, PeerProtocol(ident, NET, GEN, 0), outbound,
        msg_rate=1000, bytes_rate=1e9, max_write_buffer=1 << 20,
        handshake_timeout_s=10, idle_timeout_s=10, tls=tls,
    )  # fmt: skip


async def exchange(tmp: Path, tls: bool) -> tuple[Connection, Connection]:
    a_id, b_id = Identity.generate(), Identity.generate()
    sides: dict[str, Connection] = {}
    hb = Handler()
    server_ctx = server_context(*write_certificate(b_id, tmp / "b")) if tls else None
    client_ctx = client_context(*write_certificate(a_id, tmp / "a")) if tls else None

    async def accept(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        c = conn(r, w, b_id, False, TlsSession(server_ctx, True) if server_ctx else None)
        sides["b"] = c
        await c.run(hb)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    r, w = await asyncio.open_connection("127.0.0.1", port)
    a = conn(r, w, a_id, True, TlsSession(client_ctx, False) if client_ctx else None)
    ha = Handler()
    task = asyncio.create_task(a.run(ha))
    await asyncio.wait_for(ha.opened.wait(), 10)
    a.send(KadPing(1))
    for _ in range(200):
        if hb.got:
            break
        await asyncio.sleep(0.01)
    a.close("done")
    await asyncio.wait_for(task, 10)
    for _ in range(200):
        if sides["b"].close_reason is not None:
            break
        await asyncio.sleep(0.01)
    server.close()
    await server.wait_closed()
    return a, sides["b"]


def test_both_ends_count_the_same_bytes_and_tls_is_in_them(tmp_path: Path) -> None:
    a, b = asyncio.run(exchange(tmp_path / "tls", tls=True))
    a_out, a_in, _, _ = a.wire_bytes
    b_out, b_in, _, _ = b.wire_bytes
    assert a_out > 0 and a_in > 0
    # what one end wrote the other read, but for a TLS close_notify (a 24-byte record) the
    # reader may stop before, having read the goodbye before it
    assert 0 <= a_out - b_in <= 64
    assert b_out >= a_in  # the server's last bytes may cross the client's close
    plain_a, plain_b = asyncio.run(exchange(tmp_path / "plain", tls=False))
    assert plain_a.wire_bytes[0] == plain_b.wire_bytes[1]
    # the same handshake and ping cost more on the wire with TLS: its handshake is counted
    assert a_out + a_in > 2 * (plain_a.wire_bytes[0] + plain_a.wire_bytes[1])
    assert a.wire_bytes[2] > 0, "segments from tcp_info"
