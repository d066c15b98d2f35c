"""kill -9 of a real `netdiag node run` in the middle of a parallel sync: on restart its store
verifies, it resumes from its last committed block (nothing reported committed is lost) and
completes the sync."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from netdiag.node.genesis import load_genesis
from netdiag.node.store import Store
from tests.cli import NETDIAG
from tests.e2e.node.test_node_cluster import free_ports, get, wait
from tests.unit.node.synckit import build_chain, long_lab, seed_store

pytestmark = pytest.mark.e2e

N = 3000


def run_node(
    tmp: Path, name: str, peers: list[int], env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], int, int]:
    p2p, api = free_ports(2)
    cmd = [
        *NETDIAG,
        "node",
        "run",
        "--data-dir",
        str(tmp / name),
        "--genesis",
        str(tmp / "genesis.json"),
        "--listen",
        f"127.0.0.1:{p2p}",
        "--api",
        f"127.0.0.1:{api}",
        "--log-level",
        "warning",
    ]
    for port in peers:
        cmd += ["--peer", f"127.0.0.1:{port}"]
    proc = subprocess.Popen(
        cmd, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return proc, p2p, api


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every node still running, SIGKILL one that does not exit within 5 s."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def test_kill_9_mid_sync_resumes_from_last_commit(tmp_path: Path) -> None:
    _, spec, keys = long_lab(tmp_path, N)
    blocks = build_chain(spec, keys, N)
    seed_store(tmp_path / "server", spec, blocks)
    # Small requests, one at a time: the sync takes long enough to be caught in the middle.
    slow = {
        "NETDIAG_NODE_SYNC_BATCH": "4",
        "NETDIAG_NODE_SYNC_PEER_INFLIGHT": "1",
        "NETDIAG_NODE_SYNC_WINDOW": "8",
    }
    procs: list[subprocess.Popen[bytes]] = []
    try:
        server, server_p2p, server_api = run_node(tmp_path, "server", [], {})
        procs.append(server)
        wait(lambda: get(server_api, "/status")["height"] == N, 20, "server up at N")
        joiner, _, api = run_node(tmp_path, "joiner", [server_p2p], slow)
        procs.append(joiner)
        seen = wait(
            lambda: (h := get(api, "/status")["height"]) > 100 and h,
            30,
            "sync under way",
        )
        st = get(api, "/status")
        assert st["sync_phase"] in ("downloading", "verifying", "committing")
        assert st["synchronized"] is False and st["sync_distance"] > 0
        seen = st["height"]
        joiner.send_signal(signal.SIGKILL)
        joiner.wait(5)
        assert seen < N, "sync finished before the kill; the test proves nothing"
        store = Store(tmp_path / "joiner" / "chain.sqlite")
        store.init_genesis(load_genesis(tmp_path / "genesis.json").block())
        resumed_at = store.verify(depth=N)  # decodes, hashes, links, no gap
        store.close()
        assert seen <= resumed_at < N
        for h in (1, resumed_at):
            assert blocks[h - 1].hash == Store(tmp_path / "joiner" / "chain.sqlite").hash_at(h)
        joiner, _, api = run_node(tmp_path, "joiner", [server_p2p], {})
        procs.append(joiner)
        h0 = wait(lambda: get(api, "/status")["height"] + 1, 15, "joiner back") - 1
        assert h0 >= resumed_at  # resumed from the last committed block, not from genesis
        wait(lambda: get(api, "/status")["height"] == N, 60, "sync completed")
        st = get(api, "/status")
        assert st["tip_hash"] == blocks[-1].hash.hex() and st["synchronized"] is True
    finally:
        stop_all(procs)
