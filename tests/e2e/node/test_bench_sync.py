"""CI's short variant of `netdiag bench sync`: tiny chain, two peer counts, schema checked."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from netdiag.report import results
from tests.cli import bench_json, run_netdiag

pytestmark = pytest.mark.e2e


def test_bench_sync_tiny_run_writes_schema(tmp_path: Path) -> None:
    args = ("sync", "--peers", "1,2", "--blocks", "200", "--rounds", "1")
    saved = bench_json(tmp_path / "bs.json", *args)
    meta = saved["metadata"]
    assert meta["benchmark"] == "sync" and meta["parameters"]["peers"] == [1, 2]
    [ceiling] = saved["summary"]["ceiling"]
    assert ceiling["baseline_peers"] == 1 and ceiling["verify_ceiling_blocks_per_s"] > 0
    [rnd] = saved["raw"]["rounds"]
    rows = {r["case"]: r for r in saved["summary"]["sync"]}
    assert set(rows) == {"1 peer", "2 peers"}
    for k, r in zip((1, 2), (rows["1 peer"], rows["2 peers"]), strict=True):
        assert r["peers"] == k and r["blocks_per_s"] > 0 and 0 < r["sync_s"] <= r["wall_s"]
        # each round's speed-up is taken within that round
        assert r["speedup_vs_baseline"] == pytest.approx(
            rnd[f"p{k}_blocks_per_s"] / rnd["p1_blocks_per_s"], rel=1e-2
        )
    assert rows["1 peer"]["speedup_vs_baseline"] == 1.0
    # stall counts are reported per peer count (how many depends on the host's load)
    assert type(rnd["p1_stalls"]) is int and type(rnd["p2_stalls"]) is int
    assert rnd["p2_of_ceiling"] == pytest.approx(
        rnd["p2_blocks_per_s"] / rnd["verify_ceiling_blocks_per_s"], rel=1e-2
    )


def test_bench_sync_defaults_to_the_results_directory(tmp_path: Path) -> None:
    res = run_netdiag(
        *("bench", "sync", "--peers", "1", "--blocks", "64", "--rounds", "1"),
        env={**os.environ, "NETDIAG_RESULTS": str(tmp_path / "r")},
        check=True,
    )
    assert results.load(tmp_path / "r" / "bench-sync.json")["metadata"]["benchmark"] == "sync"
    assert "sync" in res.stdout  # the summary table


def test_bench_sync_rejects_bad_peer_list() -> None:
    res = run_netdiag("bench", "sync", "--peers", "1,x")
    assert res.returncode == 2
    assert "netdiag: error: --peers '1,x' is not a list of distinct peer counts" in res.stderr


def test_bench_sync_modes_one_row_per_mode(tmp_path: Path) -> None:
    """replay vs snapshot through real node processes: both reach the tip and backfill; the
    snapshot joiner really started from the snapshot (its phase is done, not replay)."""
    out = tmp_path / "bm.json"
    run_netdiag(
        *("bench", "sync", "--mode", "replay,snapshot", "--blocks", "300", "--accounts", "300"),
        *("--rounds", "1", "--out", str(out), "--json"),
        check=True,
    )
    saved = results.load(out)
    rows = {r["mode"]: r for r in saved["summary"]["modes"]}
    assert set(rows) == {"replay", "snapshot"}
    for r in rows.values():
        assert r["history_blocks"] == 300 and r["state_bytes"] > 300 * 32
        assert 0 < r["time_to_synchronized_s"] <= r["time_to_backfilled_s"]
    assert rows["snapshot"]["phase"] == "done" and rows["replay"]["phase"] == "off"
    assert rows["snapshot"]["snapshot_height"] == 300
    rounds = saved["raw"]["rounds"]
    assert sorted(r["mode"] for r in rounds) == ["replay", "snapshot"]


def test_bench_sync_rejects_an_unknown_mode() -> None:
    res = run_netdiag("bench", "sync", "--mode", "replay,warp")
    assert res.returncode == 2 and "--mode" in res.stderr


def test_bench_sync_a_bad_source_is_banned_and_the_join_completes(tmp_path: Path) -> None:
    """--bad-sources 1: a third server serves every chunk corrupted; the snapshot joiner (told
    to wait for all three holders, so the bad one is asked) still restores and bans it."""
    out = tmp_path / "bad.json"
    run_netdiag(
        *("bench", "sync", "--mode", "snapshot", "--blocks", "300", "--accounts", "300"),
        *("--bad-sources", "1", "--chunk-kb", "1", "--rounds", "1", "--out", str(out)),
        check=True,
    )
    saved = results.load(out)
    [row] = saved["summary"]["modes"]
    assert row["phase"] == "done" and row["chunks_total"] >= 3
    assert row["chunks_bad"] >= 1 and row["bans_min"] >= 1
    assert saved["metadata"]["parameters"]["bad_sources"] == 1
