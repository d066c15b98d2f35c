"""`netdiag node run --network NAME`: a node on a named network needs no genesis file; its
/status reports the pinned genesis hash."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from netdiag.node.networks import NETWORKS
from tests.e2e.node.test_node_cluster import NETDIAG, free_ports, get, wait

pytestmark = pytest.mark.e2e


def test_named_network_node_starts_with_the_pinned_genesis(tmp_path: Path) -> None:
    p2p, api = free_ports(2)
    proc = subprocess.Popen(
        [
            *NETDIAG, "node", "run", "--network", "netdiag-testnet",
            "--data-dir", str(tmp_path / "d"),
            "--listen", f"127.0.0.1:{p2p}", "--api", f"127.0.0.1:{api}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        st = wait(lambda: get(api, "/status"), 60, "the node's API")
        assert st["network_id"] == "netdiag-testnet" and st["validator"] is False
        assert st["genesis_hash"] == NETWORKS["netdiag-testnet"].genesis_hash
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    res = subprocess.run(
        [*NETDIAG, "node", "verify", "--data-dir", str(tmp_path / "d"),
         "--network", "netdiag-testnet"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert res.returncode == 0 and "chain ok: 1 blocks 0..0" in res.stdout
