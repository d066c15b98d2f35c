"""`netdiag bench sync --rtt-ms`: the late joiner syncs across an emulated lab link (real
namespaces nd-sync-a/b) and the lab leaves nothing behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from netdiag.kernel import netns


def test_bench_sync_over_an_emulated_link_cleans_up(tmp_path: Path) -> None:
    out = tmp_path / "bs.json"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "netdiag.cli.main",
            "bench",
            "sync",
            "--peers",
            "1",
            "--blocks",
            "300",
            "--rounds",
            "1",
            "--rtt-ms",
            "40",
            "--out",
            str(out),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert res.returncode == 0, res.stderr
    doc = json.loads(out.read_text())
    assert doc["params"]["rtt_ms"] == 40 and doc["results"]["1"]["blocks_per_s"] > 0
    # 300 blocks, 4 requests x 64 blocks in flight: at least two 40 ms round trips
    assert doc["results"]["1"]["sync_s"] >= 0.08
    assert doc["rounds"][0]["p1_blocks_by_parallel_sync"] == 300
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "nd-sync-" not in left
    assert not netns.exists("nd-sync-a") and not netns.exists("nd-sync-b")
