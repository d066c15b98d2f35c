"""Nodes talking over loopback: late-joiner catch-up sync, peer exchange, self-dial, timeouts,
slow readers, restart on the same store."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from netdiag.node.messages import GetBlocks
from tests.unit.node.nodekit import (
    RawPeer,
    api,
    node_cfg,
    on_disk,
    running,
    wait_for,
    write_lab_genesis,
)


async def test_late_joiner_catches_up_by_sync_then_follows_gossip(tmp_path: Path) -> None:
    gen, _, _ = write_lab_genesis(tmp_path, slot_ms=100)
    async with running(
        node_cfg(tmp_path, "a", gen, str(tmp_path / "validator-0.key"), tls=False)
    ) as (a, _):
        await wait_for(lambda: a.height >= 12, what="a produces")
        async with running(
            node_cfg(
                tmp_path, "b", gen, tls=False, sync_batch=5, peers=[f"127.0.0.1:{a.listen_port}"]
            )
        ) as (b, _blog):
            await wait_for(lambda: b.height >= 12, what="b catches up")
            target = a.height + 3
            await wait_for(lambda: b.height >= target, what="b follows new blocks")
            assert b.chain is not None and a.chain is not None
            assert b.chain.store.hash_at(12) == a.chain.store.hash_at(12)
            assert b.metrics.blocks_received.labels("sync")._value.get() >= 12
            st, s = await api(b, "/status")
            await wait_for(lambda: b.synchronized(), what="synchronized")
            assert st == 200 and not s["validator"]


async def test_peer_exchange_finds_peers_not_configured(tmp_path: Path) -> None:
    gen, _, _ = write_lab_genesis(tmp_path)
    async with (
        running(node_cfg(tmp_path, "a", gen, tls=False)) as (a, _),
        running(node_cfg(tmp_path, "b", gen, tls=False, peers=[f"127.0.0.1:{a.listen_port}"])) as (
            b,
            _,
        ),
    ):
        await wait_for(lambda: len(a.conns) == 1, what="a-b")
        async with running(
            # discovery off: peer exchange feeds the dialer only without the routing table
            node_cfg(
                tmp_path,
                "c",
                gen,
                tls=False,
                discovery=False,
                peers=[f"127.0.0.1:{a.listen_port}"],
            )
        ) as (c, _):
            # c only knows a; a tells c about b's listen address
            await wait_for(lambda: len(c.conns) == 2, what="c learns b via peer exchange")
            assert b.node_id in c.conns


async def test_dialing_ourselves_is_detected_and_dropped(tmp_path: Path) -> None:
    gen, _, _ = write_lab_genesis(tmp_path)
    async with running(node_cfg(tmp_path, "a", gen)) as (a, _log):
        me = f"localhost:{a.listen_port}"  # another spelling of our own address
        a.add_address(me)
        await wait_for(lambda: me in a.book.self_addrs, what="self detected")
        assert me not in a.book.addrs and not a.conns and not a.book.banned_ips


async def test_silent_connection_hits_handshake_timeout(tmp_path: Path) -> None:
    gen, _, _ = write_lab_genesis(tmp_path)
    async with running(node_cfg(tmp_path, "a", gen, tls=False, handshake_timeout_s=0.3)) as (a, _):
        r, w = await asyncio.open_connection("127.0.0.1", a.listen_port)
        data = await asyncio.wait_for(r.read(), 5)  # node's Hello, then EOF at the timeout
        assert data and a.metrics.limit_hits.labels("handshake_timeout")._value.get() == 1
        w.close()


async def test_peer_that_does_not_read_is_disconnected(tmp_path: Path) -> None:
    gen, _, _ = write_lab_genesis(tmp_path, slot_ms=50)
    cfg = node_cfg(
        tmp_path,
        "a",
        gen,
        str(tmp_path / "validator-0.key"),
        tls=False,
        max_write_buffer_bytes=64 << 10,
        peer_msg_rate=1e6,
    )
    async with running(cfg) as (a, log):
        await wait_for(lambda: a.height >= 20, what="blocks to serve")
        reader = RawPeer(a)
        await reader.connect(None)
        for i in range(20000):  # ~100 MB of answers requested; we never read them
            reader.send(GetBlocks(i, 1, 20))
            if i % 500 == 0:
                await asyncio.sleep(0)
            if not a.conns:
                break
        await wait_for(lambda: "write buffer over limit" in log.getvalue(), what="slow-reader")
        assert not a.conns
        reader.w.transport.abort()


async def test_restart_keeps_chain_and_continues(tmp_path: Path) -> None:
    gen, _, _ = write_lab_genesis(tmp_path, slot_ms=50)
    cfg = node_cfg(tmp_path, "a", gen, str(tmp_path / "validator-0.key"), tls=False)
    async with running(cfg) as (a, _):
        await wait_for(lambda: a.height >= 5, what="blocks")
        h1 = a.height
        assert a.chain is not None
        tip = a.chain.tip_hash
    async with running(cfg) as (a2, log):
        assert a2.chain is not None
        assert a2.chain.store.hash_at(h1) == tip
        await wait_for(lambda: a2.height > h1 + 2, what="continues after restart")
        assert f"up at height {h1}" in log.getvalue()


async def test_reconnects_with_backoff_after_peer_restart(tmp_path: Path) -> None:
    import socket

    gen, _, _ = write_lab_genesis(tmp_path)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    b_cfg = node_cfg(tmp_path, "b", gen, tls=True, listen=f"127.0.0.1:{port}")
    async with running(node_cfg(tmp_path, "a", gen, peers=[f"127.0.0.1:{port}"])) as (a, _log):
        async with running(b_cfg) as (b, _):
            await wait_for(lambda: b.node_id in a.conns, what="first connection")
        await wait_for(lambda: not a.conns, what="disconnect noticed")
        await asyncio.sleep(1.0)  # a few failed dials while b is down: backoff grows
        assert a.book.addrs[f"127.0.0.1:{port}"].failures >= 1
        async with running(b_cfg) as (b, _):
            await wait_for(lambda: b.node_id in a.conns, timeout=60, what="reconnection")
        assert a.book.addrs[f"127.0.0.1:{port}"].failures == 0


async def test_trickling_handshake_cannot_stretch_the_deadline(tmp_path: Path) -> None:
    import time

    gen, _, _ = write_lab_genesis(tmp_path)
    async with running(node_cfg(tmp_path, "a", gen, tls=False, handshake_timeout_s=0.5)) as (
        a,
        _,
    ):
        r, w = await asyncio.open_connection("127.0.0.1", a.listen_port)
        t0 = time.monotonic()
        w.write(b"\x00\x00\x00\xc8")  # a 200-byte frame, then its body one byte per 100 ms
        closed_at = None
        for _ in range(50):  # 5 s of trickling if nothing stops it
            await asyncio.sleep(0.1)
            if r.at_eof() or w.is_closing():
                break
            w.write(b"\x90")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(r.read(4096), 0.01)
            if r.at_eof():
                closed_at = time.monotonic() - t0
                break
        assert closed_at is not None and closed_at < 3.0, closed_at
        assert a.metrics.limit_hits.labels("handshake_timeout")._value.get() == 1
        w.close()


async def test_inbound_connection_limit(tmp_path: Path) -> None:
    gen, _, _ = write_lab_genesis(tmp_path)
    async with running(node_cfg(tmp_path, "a", gen, tls=False, max_inbound=1)) as (a, _):
        first = RawPeer(a)
        await first.connect(None)
        await wait_for(lambda: len(a.conns) == 1, what="first peer")
        r, w = await asyncio.open_connection("127.0.0.1", a.listen_port)
        assert await asyncio.wait_for(r.read(), 5) == b""  # refused before any Hello
        w.close()
        assert a.metrics.limit_hits.labels("max_inbound")._value.get() == 1
        assert len(a.conns) == 1 and first.identity.node_id in a.conns


async def test_validators_produce_only_with_a_majority_and_survive_one_down(
    tmp_path: Path,
) -> None:
    gen, _spec, _ = write_lab_genesis(tmp_path, validators=3, slot_ms=100)
    a_cfg = node_cfg(
        tmp_path, "a", gen, str(tmp_path / "validator-0.key"), tls=False, min_peers_to_produce=-1
    )
    async with running(a_cfg) as (a, _):
        await asyncio.sleep(1.0)  # 10 slots alone: 1 of 3 validators is a minority
        assert a.height == 0 and not a.quorum_connected()
        b_cfg = node_cfg(
            tmp_path,
            "b",
            gen,
            str(tmp_path / "validator-1.key"),
            tls=False,
            min_peers_to_produce=-1,
            peers=[f"127.0.0.1:{a.listen_port}"],
        )
        async with running(b_cfg) as (b, _):
            # 2 of 3 is a majority; the third validator is down, its rounds are skipped
            await wait_for(lambda: a.height >= 8 and b.height >= 8, what="production")
            assert a.chain is not None and b.chain is not None
            producers = {
                a.chain.store.block_at(h).header.producer  # type: ignore[union-attr]
                for h in range(1, 9)
            }
            assert producers == {a.node_id, b.node_id}
            assert b.chain.store.hash_at(8) == a.chain.store.hash_at(8)


async def test_split_validators_converge_on_the_longest_chain(tmp_path: Path) -> None:
    gen, _, _ = write_lab_genesis(tmp_path, validators=2, slot_ms=100)
    cfgs = [
        node_cfg(
            tmp_path,
            n,
            gen,
            str(tmp_path / f"validator-{i}.key"),
            tls=False,
            min_peers_to_produce=0,
        )
        for i, n in enumerate(("a", "b"))
    ]
    async with running(cfgs[0]) as (a, alog), running(cfgs[1]) as (b, blog):
        # apart, each builds its own chain (forced: the quorum rule is switched off)
        await wait_for(lambda: a.height >= 4 and b.height >= 4, what="two chains")
        assert a.chain is not None and b.chain is not None
        assert a.chain.store.hash_at(1) != b.chain.store.hash_at(1)
        b.add_address(f"127.0.0.1:{a.listen_port}")

        def agree() -> bool:
            assert a.chain is not None and b.chain is not None
            h = min(a.height, b.height) - 1
            return h > 6 and a.chain.store.hash_at(h) == b.chain.store.hash_at(h)

        await wait_for(agree, timeout=60, what="convergence")
        reorgs = a.metrics.reorgs._value.get() + b.metrics.reorgs._value.get()
        assert reorgs >= 1
        assert '"event": "reorg"' in alog.getvalue() + blog.getvalue()
        await on_disk(a, b)
        assert a.chain.store.verify(depth=1000) == a.height
        assert b.chain.store.verify(depth=1000) == b.height


async def test_serves_headers_and_block_ranges(tmp_path: Path) -> None:
    import msgspec

    from netdiag.node.messages import Blocks, GetHeaders, Headers
    from netdiag.node.model import BlockHeader, decode_block

    gen, _, _ = write_lab_genesis(tmp_path, slot_ms=50)
    cfg = node_cfg(tmp_path, "a", gen, str(tmp_path / "validator-0.key"), tls=False)
    async with running(cfg) as (a, _):
        await wait_for(lambda: a.height >= 6, what="blocks")
        peer = RawPeer(a)
        await peer.connect(None)
        peer.send(GetHeaders(7, 0, 5))
        peer.send(GetBlocks(8, 2, 3))
        await peer.read_until(lambda got: sum(isinstance(m, Headers | Blocks) for m in got) >= 2)
        assert a.chain is not None
        hdrs = next(m for m in peer.received if isinstance(m, Headers))
        assert hdrs.req_id == 7 and len(hdrs.headers) == 5
        for h in hdrs.headers:
            header = msgspec.msgpack.decode(h, type=BlockHeader)
            assert a.chain.store.hash_at(header.height) == header.compute_hash()
        blocks = next(m for m in peer.received if isinstance(m, Blocks))
        assert blocks.req_id == 8 and [decode_block(b).height for b in blocks.blocks] == [2, 3, 4]


async def test_a_failing_commit_is_logged_and_production_goes_on(tmp_path: Path) -> None:
    import sqlite3

    gen, _, _ = write_lab_genesis(tmp_path, slot_ms=50)
    cfg = node_cfg(tmp_path, "a", gen, str(tmp_path / "validator-0.key"), tls=False)
    async with running(cfg) as (a, log):
        await wait_for(lambda: a.height >= 2, what="blocks")
        assert a.chain is not None
        real = a.chain.store.commit_block
        failures = []

        def flaky(block):  # type: ignore[no-untyped-def]
            if not failures:
                failures.append(block.height)
                raise sqlite3.OperationalError("disk I/O error")
            real(block)

        a.chain.store.commit_block = flaky  # type: ignore[method-assign]
        h = a.height
        await wait_for(lambda: a.height >= h + 3, what="production after the failure")
        assert failures and '"internal_error"' in log.getvalue()
        # blocks reach the disk behind the loop (writer thread): wait for the durable tip, then
        # the stored chain must run past the failure with no gap (verify raises on one)
        store = a.chain.store
        await wait_for(
            lambda: (d := store.durable_tip()) is not None and d.height >= h + 3,
            what="the blocks after the failure on disk",
        )
        assert store.verify(depth=100) >= h + 3
