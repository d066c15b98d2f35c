"""bench p2p --discovery's pure parts: kad histograms from real Prometheus text, path RTTs,
the summary row, and the one-bootstrap wiring of the cluster."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from netdiag.bench import p2p_discovery as pd
from netdiag.bench import p2p_topology
from netdiag.bench.p2p import P2PBench
from netdiag.bench.p2p_driver import P2PParams
from netdiag.lab.cluster import P2P_PORT, NodeRun
from netdiag.lab.topology import routes
from netdiag.nodeapi import parse_metrics


def _node_metrics(observations: list[float]) -> dict[str, float]:
    """What a node's /metrics says after these lookups (the node's own histogram type)."""
    reg = CollectorRegistry()
    h = Histogram(
        "kad_lookup_seconds",
        "x",
        namespace="netdiag_node",
        buckets=(0.01, 0.05, 0.1, 0.5),
        registry=reg,
    )
    for v in observations:
        h.observe(v)
    return parse_metrics(generate_latest(reg).decode())


def test_buckets_from_metrics_text_and_quantile_interpolates_like_prometheus() -> None:
    b = pd.histogram_buckets(_node_metrics([0.02, 0.03, 0.04, 0.07]), pd.LOOKUP_SECONDS)
    assert b == {0.01: 0, 0.05: 3, 0.1: 4, 0.5: 4, float("inf"): 4}
    # rank 2 of 4 lies in (0.01, 0.05] which holds 3: 0.01 + 0.04 * 2/3
    assert pd.histogram_quantile(b, 0.5) == pytest.approx(0.01 + 0.04 * 2 / 3)
    assert pd.histogram_quantile(b, 1.0) == pytest.approx(0.1)
    assert pd.histogram_quantile({}, 0.5) is None
    assert pd.histogram_quantile({0.1: 0, float("inf"): 0}, 0.5) is None
    # a rank past the last finite bound answers that bound (all that is known)
    assert pd.histogram_quantile({0.1: 0, float("inf"): 2}, 0.5) == 0.1
    # another histogram in the same text is not mixed in
    assert pd.histogram_buckets(_node_metrics([0.02]), pd.LOOKUP_HOPS) == {}


def test_pooled_buckets_add_nodes_bucket_by_bucket() -> None:
    a = pd.histogram_buckets(_node_metrics([0.02]), pd.LOOKUP_SECONDS)
    b = pd.histogram_buckets(_node_metrics([0.2, 0.3]), pd.LOOKUP_SECONDS)
    pooled = pd.pooled_buckets([a, b])
    assert pooled[0.05] == 1 and pooled[0.5] == 3 and pooled[float("inf")] == 3


def test_path_rtts_take_the_shortest_lab_path_of_every_pair() -> None:
    g = p2p_topology.ClusterGraph(
        ("a", "b", "c"), (("a", "b", 0.010), ("b", "c", 0.010), ("a", "c", 0.050))
    )
    assert sorted(pd.path_rtts_s(g, ["a", "b", "c"])) == pytest.approx([0.01, 0.01, 0.02])
    assert pd.path_rtts_s(g, ["a", "c"]) == pytest.approx([0.02])
    # the lab routes by fewest hops: a-c goes over the direct 50 ms link, not via b
    topo = p2p_topology.to_lab(g, "rt", p2p_topology.PROFILES["clean"], 1)
    routed = pd.path_rtts_s(g, ["a", "b", "c"], routes(topo))
    assert sorted(routed) == pytest.approx([0.01, 0.01, 0.05])


def test_summary_sets_lookup_latency_beside_the_path_rtts() -> None:
    rows = [
        {"node": "n01", "table_entries": 3, "peers": 3},
        {"node": "n02", "table_entries": 2, "peers": 2},
    ]
    sec = {0.01: 0.0, 0.05: 4.0, float("inf"): 4.0}
    hops = {1.0: 1.0, 2.0: 4.0, float("inf"): 4.0}
    row = pd.discovery_summary("bbr", rows, sec, hops, [0.02, 0.04, 0.06])
    assert row["mesh"] == "discovery" and row["nodes"] == 2 and row["lookups"] == 4
    assert row["table_entries_min"] == 2 and row["peers_min"] == 2
    assert row["lookup_p50_ms"] == pytest.approx(30.0)
    assert row["path_rtt_median_ms"] == pytest.approx(40.0)
    assert row["lookup_p50_in_rtts"] == pytest.approx(0.75)
    assert row["hops_p50"] == 2.0  # a whole number of hops, not an interpolation
    one_hop = pd.discovery_summary("bbr", rows, sec, {1.0: 3.0, 2.0: 3.0, float("inf"): 3.0}, [])
    assert one_hop["hops_p50"] == 1.0  # was 0.5: linear within the bucket [0, 1]
    empty = pd.discovery_summary("bbr", rows, {}, {}, [])
    assert empty["lookup_p50_ms"] is None and empty["lookup_p50_in_rtts"] is None


class _Lab:
    def addr(self, name: str) -> str:
        return f"10.0.0.{int(name[1:])}"


@pytest.mark.parametrize("discovery", [False, True])
def test_discovery_gives_every_node_one_bootstrap_and_default_keeps_the_graph(
    discovery: bool, tmp_path: Path
) -> None:
    bench = P2PBench(P2PParams(nodes=6, degree=3, seed=2, discovery=discovery))
    try:
        lab = _Lab()
        runs = {
            n: NodeRun(
                n,
                None,
                tmp_path / n,
                None,
                [f"{lab.addr(m)}:{P2P_PORT}" for m in bench.graph.neighbours(n)],
            )
            for n in bench.names
        }
        graph_peers = {n: list(r.peers) for n, r in runs.items()}
        if discovery:
            bench._bootstrap_peers(lab, runs)
        boot = bench.validators[0]
        for n, r in runs.items():
            argv = r.argv(tmp_path / "genesis", lab.addr(n), tls=False)
            peers = [argv[i + 1] for i, a in enumerate(argv) if a == "--peer"]
            if not discovery:
                assert "--no-discovery" in argv and peers == graph_peers[n]
            else:
                assert "--discovery" in argv
                assert peers == ([] if n == boot else [f"{lab.addr(boot)}:{P2P_PORT}"])
    finally:
        bench.pool.shutdown()
