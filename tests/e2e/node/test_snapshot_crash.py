"""kill -9 of a real `netdiag node run` in the middle of a snapshot restore: the half-fetched
state is never taken as valid (no base, no state, height 0 on disk), and the restarted node
resumes from the chunks it had verified — it asks its peer only for the others — and ends at
the server's tip with the server's state root."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from netdiag.node import testkit
from netdiag.node.store import Store
from netdiag.nodeapi import NodeApi, metric_sum, parse_metrics
from tests.e2e.node.test_node_cluster import get, wait
from tests.e2e.node.test_sync_crash import run_node, stop_all

pytestmark = pytest.mark.e2e

BLOCKS = 100  # the snapshot is at the epoch boundary 100
EPOCH = 100
COMMON = {"NETDIAG_NODE_SNAPSHOT_INTERVAL": "0", "NETDIAG_NODE_VERIFY_WORKERS": "0"}
SERVER = COMMON | {"NETDIAG_NODE_SNAPSHOT_ANNOUNCE_S": "0.3", "NETDIAG_NODE_TARGET_OUTBOUND": "0"}
JOINER = COMMON | {
    "NETDIAG_NODE_SNAPSHOT_SYNC": "1",
    "NETDIAG_NODE_SNAPSHOT_WAIT_S": "20",
    "NETDIAG_NODE_MAX_INBOUND": "0",
}
# the first joiner reads slowly and asks one chunk at a time: caught in the middle
SLOW = {"NETDIAG_NODE_PEER_BYTES_RATE": "8192", "NETDIAG_NODE_SYNC_PEER_INFLIGHT": "1"}


def served_bytes(api: int) -> float:
    with NodeApi(None, api) as client:
        m = parse_metrics(client.metrics_text())
    return metric_sum(m, "netdiag_node_snapshot_bytes", direction="served")


def test_kill_9_mid_restore_resumes_without_refetching(tmp_path: Path) -> None:
    rich = testkit.lab_identity("snap-crash-payer", 0)
    spec, keys = testkit.past_genesis(
        BLOCKS,
        "snap-crash",
        "nd-snapcrash",
        slot_ms=500,
        epoch_length=EPOCH,
        out=tmp_path,
        allocations=[(rich.node_id, 10**15)],
    )
    txs = testkit.funding_txs(rich, 1500, 1000, spec.timestamp_ms)
    chain = testkit.build_chain(spec, keys, BLOCKS, txs=txs)
    testkit.seed_store(tmp_path / "server", spec, chain)
    state_bytes = testkit.seed_snapshot(tmp_path / "server", spec, BLOCKS, 1024)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        server, server_p2p, server_api = run_node(tmp_path, "server", [], SERVER)
        procs.append(server)
        wait(lambda: get(server_api, "/status")["height"] == BLOCKS, 30, "server up")
        joiner, _, api = run_node(tmp_path, "joiner", [server_p2p], JOINER | SLOW)
        procs.append(joiner)

        def mid_restore() -> dict[str, Any] | None:
            ob = get(api, "/status")["onboarding"]
            ok = ob["phase"] == "chunks" and ob["chunks_verified"] >= 2
            return ob if ok else None

        ob = wait(mid_restore, 60, "the restore under way (some chunks verified)")
        joiner.send_signal(signal.SIGKILL)
        joiner.wait(5)
        total = ob["chunks_total"]
        chunk_dir = tmp_path / "joiner" / "snapshots" / "chunks"
        on_disk = len([p for p in chunk_dir.iterdir() if not p.name.endswith(".tmp")])
        assert 2 <= on_disk < total, "the restore finished before the kill: proves nothing"
        # nothing of the half-fetched state was taken as valid: no base, no blocks, no manifest
        store = Store(tmp_path / "joiner" / "chain.sqlite")
        try:
            assert store.base_height() == 0 and store.tip()[0] <= 0
        finally:
            store.close()
        assert not list((tmp_path / "joiner" / "snapshots").glob("manifest-*"))
        served_before = served_bytes(server_api)

        joiner, _, api = run_node(tmp_path, "joiner", [server_p2p], JOINER)
        procs.append(joiner)
        st = wait(
            lambda: (s := get(api, "/status"))["height"] == BLOCKS and s["synchronized"] and s,
            60,
            "the restarted joiner synchronized",
        )
        ob = st["onboarding"]
        assert ob["phase"] == "done" and ob["chunks_total"] == total
        assert ob["chunks_resumed"] == on_disk, "every chunk verified before the kill reused"
        assert ob["chunks_fetched"] == total - on_disk, "and none of them fetched again"
        # the server's gauge is set on its heartbeat, so it may lag the joiner's "done"
        served_again = wait(
            lambda: (n := served_bytes(server_api) - served_before) > 0 and n,
            30,
            "the server's served-bytes gauge to show the refetch",
        )
        assert served_again < state_bytes  # only the missing part crossed the wire
        server_st = get(server_api, "/status")
        assert st["tip_hash"] == server_st["tip_hash"] == chain[-1].hash.hex()
        assert st["state_root"] == server_st["state_root"] == chain[-1].header.state_root.hex()
    finally:
        stop_all(procs)
