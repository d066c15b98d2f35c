"""CI's short variant of `netdiag bench validate`: tiny parameters, output schema checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from netdiag.bench import validate
from tests.cli import bench_json

pytestmark = pytest.mark.e2e


def test_bench_validate_tiny_run_writes_schema(tmp_path: Path) -> None:
    args = ("validate", "--blocks", "3", "--txs-per-block", "5", "--rounds", "2")
    saved = bench_json(tmp_path / "bv.json", *args)
    assert saved["metadata"]["benchmark"] == "validate"
    [r] = saved["summary"]["figures"]
    rounds = saved["raw"]["rounds"]
    assert [x["round"] for x in rounds] == [1, 2]
    for key in (
        "ed25519_verify_per_s",
        "tx_validate_per_s",
        "block_validate_per_s",
        "block_txs_validate_per_s",
        "block_commit_per_s",
        "block_commit_txs_per_s",
    ):
        assert r[key] > 0, key
    for rnd in rounds:  # each round's ratios are taken within that round
        assert rnd["tx_vs_raw"] == pytest.approx(rnd["tx"] / rnd["raw"])
        assert rnd["block_txs_vs_raw"] == pytest.approx(rnd["block"] * 5 / rnd["raw"])
    ratios = [x["tx_vs_raw"] for x in rounds]
    assert r["tx_vs_raw_ratio"] == pytest.approx(sum(ratios) / 2)  # median of two
    paths = {row["path"]: row for row in saved["summary"]["validate"]}
    assert paths["raw Ed25519 verify"]["ratio_to_raw_verify"] == 1.0
    assert paths["tx decode+validate"]["ratio_to_raw_verify"] == r["tx_vs_raw_ratio"]
    # one core against every core, side by side (wall time, netdiag.node.sigpool)
    assert r["workers"] >= 1 and r["raw_1core_wall_per_s"] > 0 and r["raw_pool_wall_per_s"] > 0
    cores = saved["summary"]["cores"]
    assert cores[0]["ratio_to_one_core_raw"] == 1.0
    assert cores[1]["ratio_to_one_core_raw"] == r["raw_pool_vs_1core_ratio"]
    assert [c["path"] for c in cores if "cores_obtained" in c] == [c["path"] for c in cores]
    # the tx path one at a time vs micro-batched (node/txbatch.py), and blocks pipelined
    by_path = {c["path"].split(" (")[0]: c for c in cores}
    n = r["workers"]
    tx_row = by_path[f"tx validate, micro-batched, {n} workers"]
    assert tx_row["ratio_to_one_core_raw"] == r["tx_pool_vs_1core_raw_ratio"]
    assert tx_row["ratio_to_one_core_fast"] == r["tx_pool_vs_1core_fast_ratio"]
    assert by_path["raw verify, one core, workers' verifier"]["ratio_to_one_core_fast"] == 1.0
    assert r["tx_pool_wall_per_s"] > 0 and r["block_txs_pipelined_wall_per_s"] > 0
    for rnd in rounds:
        # the cores each wall-timed path obtained; a tiny run is too short to say (0)
        assert rnd["raw_pool_cores"] >= 0 and rnd["raw_1core_cores"] >= 0
        assert rnd["raw_pool_per_core_vs_1core"] == pytest.approx(
            validate.per_core_ratio(
                rnd["raw_pool_wall"],
                rnd["raw_pool_cores"],
                rnd["raw_1core_wall"],
                rnd["raw_1core_cores"],
            )
        )
        assert rnd["raw_pool_vs_1core"] == pytest.approx(
            rnd["raw_pool_wall"] / rnd["raw_1core_wall"]
        )
        assert rnd["tx_pool_vs_1core_fast"] == pytest.approx(
            rnd["tx_pool_wall"] / rnd["raw_1core_fast_wall"]
        )
