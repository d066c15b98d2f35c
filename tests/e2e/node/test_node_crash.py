"""kill -9 of a real `netdiag node run` while it commits blocks every 20 ms: on restart the
store verifies, nothing the API had reported committed is lost, and production continues."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from netdiag.node.genesis import load_genesis
from netdiag.node.store import Store
from tests.cli import NETDIAG
from tests.e2e.node.test_node_cluster import free_ports, get, node_genesis, wait

pytestmark = pytest.mark.e2e


def test_kill_9_node_and_restart(tmp_path: Path) -> None:
    node_genesis(tmp_path, 1, "crash", 20, "--timestamp-ms", str(int(time.time() * 1000)))
    rng = random.Random(7)
    seen_height = 0
    for _ in range(3):
        p2p, api = free_ports(2)
        proc = subprocess.Popen(
            [
                *NETDIAG,
                "node",
                "run",
                "--data-dir",
                str(tmp_path / "data"),
                "--genesis",
                str(tmp_path / "genesis.json"),
                "--key",
                str(tmp_path / "validator-0.key"),
                "--listen",
                f"127.0.0.1:{p2p}",
                "--api",
                f"127.0.0.1:{api}",
                "--log-level",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            h0 = wait(lambda: get(api, "/status")["height"] + 1, 60, "node up") - 1  # noqa: B023
            assert h0 >= seen_height, f"restart lost blocks: {h0} < {seen_height}"
            wait(lambda: get(api, "/status")["height"] > h0 + 5, 60, "production")  # noqa: B023
            time.sleep(rng.uniform(0.05, 0.3))
            seen_height = get(api, "/status")["height"]
            proc.send_signal(signal.SIGKILL)
            proc.wait(5)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.stderr is not None
        errors = [json.loads(x) for x in proc.stderr.read().decode().splitlines() if x]
        assert not [e for e in errors if e["level"] == "error"], errors
        store = Store(tmp_path / "data" / "chain.sqlite")
        store.init_genesis(load_genesis(tmp_path / "genesis.json").block())
        tip = store.verify(depth=10_000)  # every stored block decodes, hashes, links, no gap
        assert tip >= seen_height
        store.close()
    assert seen_height > 15
