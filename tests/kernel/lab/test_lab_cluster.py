"""role = "node" clusters: 8 `netdiag node` processes on a ring of WAN links agree on a tip."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from netdiag.lab import Lab, Topology, cluster, parse
from tests.kernel.lab.helpers import leftovers

EXAMPLE = Path(__file__).parents[3] / "netdiag/lab/examples/cluster8.toml"


def _topo(name: str) -> Topology:
    return parse(EXAMPLE.read_text().replace('name = "cluster8"', f'name = "{name}"'))


def test_role_nodes_pending_without_node(lab_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # as on a host where netdiag node is not installed
    monkeypatch.setattr(cluster, "node_available", lambda: False)
    with Lab.up(_topo(lab_name)) as lab:
        assert lab.pending_roles == [f"n{i}" for i in range(8)]
        assert lab.processes == []
    assert leftovers(lab_name) == []


@pytest.mark.slow
def test_cluster_agrees_on_tip(lab_name: str) -> None:
    assert cluster.node_available()  # the node ships with netdiag
    with Lab.up(_topo(lab_name)) as lab:
        names = [n.name for n in lab.topology.nodes]
        deadline = time.monotonic() + 120  # a progress timeout, not a figure
        tips: dict[str, tuple[int, str]] = {}
        while time.monotonic() < deadline:
            assert lab.crashed() == [], [(s.node, s.tail()) for s in lab.crashed()]
            try:
                tips = {}
                for n in names:
                    st = lab.node_api(n, "/status")
                    tips[n] = (int(st["height"]), str(st["tip_hash"]))
            except OSError:
                time.sleep(0.5)
                continue
            if len(set(tips.values())) == 1 and min(h for h, _ in tips.values()) >= 3:
                break
            time.sleep(0.5)
        assert len(set(tips.values())) == 1 and min(h for h, _ in tips.values()) >= 3, tips
        logs = [Path(s.log) for s in lab.processes if s.log]
        assert len(logs) == 8 and all(p.stat().st_size > 0 for p in logs)
    assert leftovers(lab_name) == []
