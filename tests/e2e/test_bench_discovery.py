"""`netdiag bench discovery` end to end in a lab, the tiny CI variant: 4 nodes, no Sybils.

Asserted: the run is in a lab (the default with root), the cluster forms, lookups are set
against the lab's path RTTs (bench p2p's seeded link delays), the byte figure holds the probe
connections' bytes beside the frames, and every namespace is gone afterwards.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from netdiag.kernel import netns
from netdiag.report import results
from tests.cli import run_netdiag
from tests.conftest import missing_root


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.skipif(missing_root() is not None, reason=missing_root() or "")
def test_tiny_lab_cluster_forms_and_lookups_meet_the_path_rtts(tmp_path: Path) -> None:
    out = tmp_path / "disc.json"
    before = set(netns.list_names())
    p = run_netdiag(
        *("bench", "discovery", "--nodes", "4", "--sybils", "0", "--duration", "10"),
        *("--refresh", "5", "--timeout", "120", "--seed", "3", "--out", str(out)),
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    doc = results.load(out)  # validates the schema
    meta = doc["metadata"]
    assert meta["where"] == "lab" and meta["parameters"]["where"] == "lab"
    assert meta["link_engine"] in ("userspace", "kernel")
    [form] = doc["summary"]["formation"]
    assert form["tables_s"] is not None and form["connected_s"] is not None
    lookups = doc["raw"]["lookups"]
    assert lookups, "no lookup got an answer"
    # every lookup that found a node is set against the path RTT to it (links have delay)
    found = [r for r in lookups if r["nearest"]]
    assert found and all(r["rtt_nearest_ms"] and r["rtt_nearest_ms"] > 0 for r in found)
    # no lookup ends sooner than one round trip to the nearest node it found
    assert all(r["in_nearest_rtts"] >= 0.9 for r in found)
    summ = {r["purpose"]: r for r in doc["summary"]["lookups"]}
    assert summ["all"]["path_rtt_median_ms"] is not None
    [traffic] = doc["summary"]["traffic"]
    assert traffic["total_per_node_per_min_mean"] >= traffic["frames_per_node_per_min_mean"]
    assert form["bytes_per_node_mean"] > 0
    left = set(netns.list_names()) - before
    assert not [n for n in left if n.startswith("nd-kd")], f"namespaces left: {left}"
