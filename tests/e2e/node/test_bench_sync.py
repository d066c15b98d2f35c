"""CI's short variant of `netdiag bench sync`: tiny chain, two peer counts, schema checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli import run_netdiag

pytestmark = pytest.mark.e2e


def test_bench_sync_tiny_run_writes_schema(tmp_path: Path) -> None:
    out = tmp_path / "bs.json"
    res = run_netdiag(
        *("bench", "sync", "--peers", "1,2", "--blocks", "200", "--rounds", "1"),
        *("--out", str(out), "--json"),
        check=True,
    )
    printed = json.loads(res.stdout)
    saved = json.loads(out.read_text())
    assert printed == saved
    assert saved["benchmark"] == "sync" and saved["params"]["peers"] == [1, 2]
    assert saved["baseline_peers"] == 1 and len(saved["rounds"]) == 1
    rnd = saved["rounds"][0]
    for k in ("1", "2"):
        r = saved["results"][k]
        assert r["peers"] == int(k) and r["blocks_per_s"] > 0 and 0 < r["sync_s"] <= r["wall_s"]
        # each round's speed-up is taken within that round
        assert r["speedup_vs_baseline"] == pytest.approx(
            rnd[f"p{k}_blocks_per_s"] / rnd["p1_blocks_per_s"], rel=1e-2
        )
    assert saved["results"]["1"]["speedup_vs_baseline"] == 1.0
    assert saved["verify_ceiling_blocks_per_s"] > 0
    # stall counts are reported per peer count (how many depends on the host's load)
    assert type(rnd["p1_stalls"]) is int and type(rnd["p2_stalls"]) is int
    assert rnd["p2_of_ceiling"] == pytest.approx(
        rnd["p2_blocks_per_s"] / rnd["verify_ceiling_blocks_per_s"], rel=1e-2
    )


def test_bench_sync_rejects_bad_peer_list() -> None:
    res = run_netdiag("bench", "sync", "--peers", "1,x")
    assert res.returncode == 2
    assert "netdiag: error: --peers '1,x' is not a list of distinct peer counts" in res.stderr
