"""`netdiag bench sync --rtt-ms`: the late joiner syncs across an emulated lab link (real
namespaces nd-sync-a/b) and the lab leaves nothing behind."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from netdiag.kernel import netns
from netdiag.report import results
from tests.cli import run_netdiag


def test_bench_sync_over_an_emulated_link_cleans_up(tmp_path: Path) -> None:
    out = tmp_path / "bs.json"
    res = run_netdiag(
        *("bench", "sync", "--peers", "1", "--blocks", "300", "--rounds", "1"),
        *("--rtt-ms", "40", "--out", str(out), "--json"),
        timeout=180,
    )
    assert res.returncode == 0, res.stderr
    doc = results.load(out)
    [r] = doc["summary"]["sync"]
    assert doc["metadata"]["parameters"]["rtt_ms"] == 40
    assert doc["metadata"]["link_engine"] in ("userspace", "kernel")
    # 300 blocks, 4 requests x 64 blocks in flight: at least two 40 ms round trips (a floor)
    assert r["sync_s"] >= 0.08
    assert r["blocks_per_s"] == pytest.approx(300 / r["sync_s"], rel=0.05)
    assert doc["raw"]["rounds"][0]["p1_blocks_by_parallel_sync"] == 300
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "nd-sync-" not in left
    assert not netns.exists("nd-sync-a") and not netns.exists("nd-sync-b")
