"""bench discovery without processes: the connectivity judgement and the result schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from netdiag.bench import discovery_figures, discovery_place
from netdiag.bench.discovery import DiscoveryBench, Formation, Params, Proc
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
    bench = DiscoveryBench(Params(nodes=3, duration_s=5, sybils=2), discovery_place.loopback(3))
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
    honest = [Proc(f"n0{i}", f"127.77.{i}.1", None, Path("x")) for i in range(3)]  # type: ignore[arg-type]
    per_min = {
        "n00": {
            "frames": 100.0,
            "probe_payload": 900.0,
            "probe_segments": 10.0,
            "find_ok": 12.0,
            "find_timeout": 120.0,
        }
    }
    bench.formation_bytes = {
        "n00": {**per_min["n00"], "find_ok": 3.0, "find_timeout": 1.0},
    }
    rb = bench._result(honest, Formation(1.0, 2.0, None), lookups, per_min, final, eclipse)
    doc = rb.to_dict()
    validate(doc)
    assert doc["metadata"]["benchmark"] == "discovery"
    look = doc["summary"]["lookups"][0]
    assert look["hops_p50"] == 1.5 and look["hops_goal"] == 2 and look["lookups"] == 2
    form = doc["summary"]["formation"][0]
    assert form["tables_s"] == 1.0 and form["peers_s"] is None
    assert doc["summary"]["eclipse"][0]["sybil_outbound"] == 1
    assert {r["node"] for r in doc["raw"]["nodes"]} == {"n00", "n01", "n02"}
    traffic = doc["summary"]["traffic"][0]
    # the probes' payload and segment headers count beside the frames on peer connections
    assert traffic["total_per_node_per_min_mean"] > traffic["frames_per_node_per_min_mean"]
    assert traffic["total_per_node_per_min_mean"] > traffic["probe_payload_per_node_per_min_mean"]
    rpcs = {r["phase"]: r for r in doc["summary"]["rpcs"]}
    assert rpcs["formation"]["find_timeout"] == 1
    assert rpcs["window"]["find_timeout"] == 10  # 120 a minute over a 5 s window
    bench.work.rmdir()


def test_lookup_latency_is_set_against_the_path_rtts() -> None:
    rtt = {frozenset(("a", "b")): 0.040, frozenset(("a", "c")): 0.100, frozenset(("b", "c")): 0.06}

    def rtt_s(x: str, y: str) -> float | None:
        return 0.0 if x == y else rtt.get(frozenset((x, y)))

    rows = discovery_figures.lookup_rows(
        [
            {"node": "A", "purpose": "self", "hops": 1, "seconds": 0.2, "nearest": "b:7600"},
            {"node": "A", "purpose": "self", "hops": 2, "seconds": 0.3, "nearest": ""},
        ],
        {"A": "a", "B": "b", "C": "c"},
        rtt_s,
    )
    assert rows[0]["rtt_nearest_ms"] == 40.0 and rows[0]["in_nearest_rtts"] == 5.0
    assert rows[0]["rtt_max_ms"] == 100.0 and rows[0]["in_max_rtts"] == 2.0
    assert rows[1]["in_nearest_rtts"] is None  # nothing answered nearer: no ratio
    summ = discovery_figures.lookup_summary(rows, 3)
    assert summ["latency_in_max_rtts_p50"] == 2.5 and summ["hops_goal"] == 2


def test_the_lab_graph_places_sybils_and_victims_beside_the_honest_nodes() -> None:
    g = discovery_place.graph(16, seed=1)
    assert len(g.nodes) == 19 and g.connected()
    extra = {discovery_place.SYBIL_NODE, discovery_place.VICTIM_NODE}
    assert extra <= set(g.nodes)
    # each extra namespace hangs off one honest node
    for x in extra:
        assert len(g.neighbours(x)) == 1 and g.neighbours(x)[0] in g.nodes[:16]
    assert g == discovery_place.graph(16, seed=1), "seeded"
