"""REST API of a running single-validator node: status, blocks, peers, tx submission, metrics."""

from __future__ import annotations

import hashlib
import subprocess
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from netdiag.node.api import tx_json
from netdiag.node.crypto import Identity
from netdiag.node.model import make_tx
from tests.unit.node.nodekit import (
    RawPeer,
    api,
    client_ssl,
    node_cfg,
    running,
    wait_for,
    write_lab_genesis,
)


async def test_api_end_to_end(tmp_path: Path) -> None:
    gen, _, _ = write_lab_genesis(tmp_path, slot_ms=100)
    cfg = node_cfg(tmp_path, "a", gen, str(tmp_path / "validator-0.key"))
    async with running(cfg) as (a, log):
        assert a.chain is not None
        await wait_for(lambda: a.chain is not None and a.chain.height >= 2, what="blocks")
        st, s = await api(a, "/status")
        assert st == 200 and s["validator"] and s["synchronized"] and s["peers"] == 0
        assert {"node_id", "height", "tip_hash", "uptime_s", "genesis_hash"} <= set(s)

        user = Identity.generate()
        tx = make_tx(user, 1, b"hello", int(time.time() * 1000))
        st, r = await api(a, "/tx", "POST", tx_json(tx))
        assert st == 202 and r["accepted"] and r["txid"] == tx.txid().hex()
        st, r = await api(a, "/tx", "POST", tx_json(tx))
        assert st == 200 and r["duplicate"]
        st, m = await api(a, f"/message/{hashlib.sha256(tx.encode()).hexdigest()}")
        assert st == 200 and m["topic"] == "txs" and m["first_peer"] is None
        assert m["verdict"] == "accept" and m["duplicates"] == 0
        # absolute first-seen on the host's CLOCK_MONOTONIC, consistent with the age
        rec = a.gossip.seen[hashlib.sha256(tx.encode()).digest()]
        assert m["first_seen_monotonic_ns"] == round(rec.first_seen * 1e9)
        assert 0 < m["first_seen_monotonic_ns"] <= time.monotonic_ns()
        assert time.monotonic_ns() - m["first_seen_monotonic_ns"] >= m["first_seen_age_s"] * 1e9
        bad = tx_json(make_tx(user, 2, b"x", 0)) | {"payload": "00"}
        st, r = await api(a, "/tx", "POST", bad)
        assert st == 400 and r["reason"] == "invalid"
        st, r = await api(a, "/tx", "POST", {"sender": "zz"})
        assert st == 400 and r["reason"] == "format"

        await wait_for(
            lambda: a.chain is not None and a.chain.store.has_tx(tx.txid()), what="tx included"
        )
        h = a.chain.store.tx_height(tx.txid())  # the write-behind overlay: maybe not on disk yet
        assert h is not None

        def on_disk() -> bool:  # the API serves blocks from disk (/status height is durable)
            tip = a.chain.store.durable_tip() if a.chain is not None else None
            return tip is not None and tip.height >= h

        await wait_for(on_disk, what=f"block {h} on disk")
        st, b = await api(a, f"/block/{h}")
        assert st == 200 and [t["txid"] for t in b["txs"]] == [tx.txid().hex()]
        st, b2 = await api(a, f"/block/0x{b['hash']}")
        assert st == 200 and b2 == b
        assert (await api(a, "/block/999999"))[0] == 404
        assert (await api(a, "/block/nothex"))[0] == 400

        peer = RawPeer(a)
        await peer.connect(client_ssl(tmp_path, Identity.generate()))
        await wait_for(lambda: len(a.conns) == 1, what="peer")
        st, peers = await api(a, "/peers")
        assert st == 200 and len(peers) == 1
        p = peers[0]
        assert p["peer_id"] == peer.identity.node_id.hex() and p["direction"] == "inbound"
        assert isinstance(p["socket_cookie"], int) and p["socket_cookie"] > 0 and p["tls"]
        assert set(p["mesh"]) == {"blocks", "txs", "presence", "snapshots"}
        # the kernel (sock_diag, via ss from iproute2) reports the same cookie for the socket
        local_port = peer.w.get_extra_info("sockname")[1]
        out = subprocess.run(
            ["ss", "-tneH", "dst", f"127.0.0.1:{local_port}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert f"sk:{p['socket_cookie']:x} " in out, out
        assert f"127.0.0.1:{a.listen_port} " in out

        st, text = await api(a, "/metrics")
        assert st == 200
        fams = {f.name: f for f in text_string_to_metric_families(text)}
        assert fams["netdiag_node_blocks_validated"].samples[0].value >= 2
        rejected = {
            s.labels.get("reason"): s.value
            for s in fams["netdiag_node_txs_rejected"].samples
            if s.name.endswith("_total")
        }
        assert rejected.get("tx_signature") == 1
        assert "netdiag_node_validation_seconds" in fams
        # the loop thread's CPU time sits beside the wall time and never exceeds it
        wall = {
            s.labels["kind"]: s.value
            for s in fams["netdiag_node_validation_seconds"].samples
            if s.name.endswith("_sum")
        }
        cpu = {
            s.labels["kind"]: s.value
            for s in fams["netdiag_node_validation_cpu_seconds"].samples
            if s.name.endswith("_total")
        }
        assert 0 < cpu["tx"] <= wall["tx"] + 1e-3
        assert "netdiag_node_gossip_first_seen_delay_seconds" in fams
        assert "tx rejected" in log.getvalue()
