"""Admission from accept() with TLS on (real loopback sockets): a socket in its TLS handshake
holds its slots, TLS-level failures count toward the IP ban, a connect/close flood leaves no
connection state behind while the node keeps producing."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from pathlib import Path

from netdiag.node.crypto import Identity
from tests.e2e.node.test_node_attacks import metric
from tests.unit.node.nodekit import api, client_ssl, node_cfg, running, wait_for, write_lab_genesis


async def closed_by_node(r: asyncio.StreamReader, within_s: float) -> bool:
    try:
        return await asyncio.wait_for(r.read(100), within_s) == b""
    except TimeoutError:
        return False
    except ConnectionError:
        return True


async def test_non_tls_bytes_on_the_tls_port_count_toward_the_ip_ban(tmp_path: Path) -> None:
    gen, _, _ = write_lab_genesis(tmp_path)
    cfg = node_cfg(tmp_path, "a", gen, tls=True, max_failed_handshakes_per_ip=5)
    async with running(cfg) as (a, log):
        for _ in range(8):
            s = socket.create_connection(("127.0.0.1", a.listen_port))
            s.sendall(os.urandom(64))  # not a TLS ClientHello
            s.close()
        await wait_for(lambda: "ip_banned" in log.getvalue(), what="ip ban")
        assert "TLS handshake failed" in log.getvalue() or "TLS" in log.getvalue()
        r, w = await asyncio.open_connection("127.0.0.1", a.listen_port)
        assert await closed_by_node(r, 10.0), "a banned address is closed at accept()"
        w.close()


async def test_sockets_in_the_tls_handshake_hold_their_per_ip_slots(tmp_path: Path) -> None:
    gen, _, _ = write_lab_genesis(tmp_path)
    cfg = node_cfg(
        tmp_path,
        "a",
        gen,
        tls=True,
        max_inbound_per_ip=3,
        handshake_timeout_s=30.0,
        conn_rate_per_ip=0.0,
    )
    async with running(cfg) as (a, _):
        idle = [await asyncio.open_connection("127.0.0.1", a.listen_port) for _ in range(3)]
        await wait_for(lambda: len(a.pending) == 3, what="three sockets counted while handshaking")
        r, w = await asyncio.open_connection("127.0.0.1", a.listen_port)
        assert await closed_by_node(r, 10.0), "the fourth socket from the address is refused"
        w.close()
        _, m = await api(a, "/metrics")
        assert metric(m, 'netdiag_node_limit_hits_total{limit="max_inbound_per_ip"}') >= 1
        assert metric(m, 'netdiag_node_resource_usage{resource="handshakes_inbound"}') == 3
        assert metric(m, 'netdiag_node_limit{name="max_inbound_per_ip"}') == 3
        for _, iw in idle:
            iw.close()
        await wait_for(lambda: not a.pending, what="slots freed")
        ctx = client_ssl(tmp_path, Identity.generate())
        r2, w2 = await asyncio.open_connection("127.0.0.1", a.listen_port, ssl=ctx)
        assert not await closed_by_node(r2, 1.0), "a TLS client is admitted again"
        w2.close()


async def test_a_tls_connect_close_flood_leaves_no_state_and_production_goes_on(
    tmp_path: Path,
) -> None:
    gen, _, _ = write_lab_genesis(tmp_path)
    key = str(tmp_path / "validator-0.key")
    cfg = node_cfg(tmp_path, "a", gen, key, tls=True, max_failed_handshakes_per_ip=10_000)
    async with running(cfg) as (a, _):
        await wait_for(lambda: a.height >= 1, what="production")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        before = a.height
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2.0  # bounded: two seconds of flood
        attempts = 0
        while loop.time() < deadline:
            attempts += 1
            try:
                _, w = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", a.listen_port, ssl=ctx), 5.0
                )
                w.transport.abort()  # complete TLS, then vanish without a node handshake
            except (OSError, ssl.SSLError, TimeoutError):
                pass
        assert attempts > 10
        await wait_for(lambda: not a.pending, what="every flood socket released")
        await wait_for(lambda: a.height > before, what="production during and after the flood")
        _, m = await api(a, "/metrics")
        assert metric(m, 'netdiag_node_handshakes_total{result="failed"}') >= 1
        assert a.core.memory.used == sum(a.core.memory.held.values())
        assert len(a.core.memory.held) == len(a.conns), "no budget held for closed sockets"
