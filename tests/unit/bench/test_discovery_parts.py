"""bench discovery without processes: the connectivity judgement and the result schema."""

from __future__ import annotations

from typing import Any

from netdiag.bench.discovery import DiscoveryBench, Formation, Params
from netdiag.report.results import validate


def snap(edges: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
    return {
        n: {
            "table": {"node_id": f"id-{n}", "size": len(nbrs)},
            "peers": [{"peer_id": f"id-{m}", "direction": "outbound"} for m in nbrs],
        }
        for n, nbrs in edges.items()
    }


def test_connected_follows_peer_ids_in_either_direction() -> None:
    assert DiscoveryBench._connected(snap({"a": ["b"], "b": [], "c": ["b"]}))
    assert not DiscoveryBench._connected(snap({"a": ["b"], "b": [], "c": ["d"], "d": []}))
    # a peer that is not one of ours (a probe, a stranger) connects nothing
    assert not DiscoveryBench._connected(snap({"a": ["x"], "b": ["x"]}))


def test_result_is_in_the_common_format() -> None:
    bench = DiscoveryBench(Params(nodes=3, duration_s=5, sybils=2))
    bench.series = [("table_entries", 0.5, 2.0, "n00"), ("peers", 0.5, 1.0, "n00")]
    final = snap({"n00": ["n01"], "n01": ["n00"], "n02": ["n00"]})
    lookups = [
        {"node": "n00", "purpose": "self", "hops": 1, "seconds": 0.01, "replies": 2},
        {"node": "n01", "purpose": "refresh", "hops": 2, "seconds": 0.03, "replies": 2},
    ]
    eclipse = [
        {
            "bootstrap": "honest",
            "sybils": 2,
            "victim_outbound": 3,
            "sybil_outbound": 1,
            "sybil_inbound": 0,
            "victim_table": 4,
            "sybil_table": 2,
            "goal_sybil_outbound_max": 2,
        }
    ]
    rb = bench._result([], Formation(1.0, 2.0, None), lookups, {"n00": 120.0}, final, eclipse)
    doc = rb.to_dict()
    validate(doc)
    assert doc["metadata"]["benchmark"] == "discovery"
    look = doc["summary"]["lookups"][0]
    assert look["hops_p50"] == 1.5 and look["hops_goal"] == 2 and look["lookups"] == 2
    form = doc["summary"]["formation"][0]
    assert form["tables_s"] == 1.0 and form["peers_s"] is None
    assert doc["summary"]["eclipse"][0]["sybil_outbound"] == 1
    assert {r["node"] for r in doc["raw"]["nodes"]} == {"n00", "n01", "n02"}
    bench.work.rmdir()
