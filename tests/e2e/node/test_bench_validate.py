"""CI's short variant of `netdiag bench validate`: tiny parameters, output schema checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli import run_netdiag

pytestmark = pytest.mark.e2e


def test_bench_validate_tiny_run_writes_schema(tmp_path: Path) -> None:
    out = tmp_path / "bv.json"
    res = run_netdiag(
        *("bench", "validate", "--blocks", "3", "--txs-per-block", "5", "--rounds", "2"),
        *("--out", str(out), "--json"),
        check=True,
    )
    printed = json.loads(res.stdout)
    saved = json.loads(out.read_text())
    assert printed == saved
    assert saved["benchmark"] == "validate" and len(saved["rounds"]) == 2
    r = saved["results"]
    for key in (
        "ed25519_verify_per_s",
        "tx_validate_per_s",
        "block_validate_per_s",
        "block_txs_validate_per_s",
        "block_commit_per_s",
        "block_commit_txs_per_s",
    ):
        assert r[key] > 0, key
    for rnd in saved["rounds"]:  # each round's ratios are taken within that round
        assert rnd["tx_vs_raw"] == pytest.approx(rnd["tx"] / rnd["raw"])
        assert rnd["block_txs_vs_raw"] == pytest.approx(rnd["block"] * 5 / rnd["raw"])
    ratios = [x["tx_vs_raw"] for x in saved["rounds"]]
    assert r["tx_vs_raw_ratio"] == pytest.approx(sum(ratios) / 2)  # median of two
