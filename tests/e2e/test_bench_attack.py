"""`netdiag bench attack --quick` end to end: real node processes on loopback, every shipped
attack run, the result file valid in the common schema, every node alive afterwards. No
timing or rate thresholds: whether an attack is defended is the benchmark's figure, not this
test's."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from netdiag.bench.attack.runner import ATTACKS
from netdiag.report.results import load, rows
from tests.cli import NETDIAG

pytestmark = pytest.mark.e2e


def test_quick_run_writes_schema_and_every_node_survives(tmp_path: Path) -> None:
    out = tmp_path / "attack.json"
    res = subprocess.run(
        [*NETDIAG, "bench", "attack", "--quick", "--out", str(out), "--json"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    doc = load(out)  # validates schema version 1
    assert json.loads(res.stdout)["summary"] == doc["summary"]
    assert doc["metadata"]["benchmark"] == "attack"
    summary = rows(doc, "summary", "attacks")
    assert [r["attack"] for r in summary] == list(ATTACKS)
    for r in summary:
        assert r["survived"] is True, r
        assert r["defended"] in (True, False, None)
        assert r["attacker_banned"] in (True, False, None)
        assert isinstance(r["rss_before_mb"], float) and isinstance(r["rss_peak_mb"], float)
        assert r["rss_peak_mb"] >= r["rss_before_mb"]
        assert isinstance(r["blocks_control"], int) and r["blocks_control"] >= 0
    chains = rows(doc, "summary", "chains")  # every attacked store verified offline afterwards
    assert len(chains) >= 3 and all(c["chain_valid"] is True for c in chains), chains
    assert all(isinstance(c["blocks_checked"], int) and c["blocks_checked"] > 1 for c in chains)
    details = {r["attack"]: r for r in rows(doc, "raw", "attacks")}
    assert set(details) == set(ATTACKS)
    assert all(isinstance(d["why"], str) and d["why"] for d in details.values())
    assert any(m.get("metric") == "rss_bytes" for m in doc["series_meta"].values())
    assert {m.get("cluster") for m in doc["series_meta"].values()} >= {"target", "control"}


def test_unknown_attack_is_a_usage_error(tmp_path: Path) -> None:
    res = subprocess.run(
        [*NETDIAG, "bench", "attack", "--attacks", "nosuch", "--out", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2
    assert res.stderr.startswith("netdiag: error:") and "tls_flood" in res.stderr
    assert not (tmp_path / "x").exists()
