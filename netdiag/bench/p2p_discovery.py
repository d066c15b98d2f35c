"""`bench p2p --discovery`: the mesh comes from the nodes' Kademlia tables, not the graph.

Every node gets one bootstrap ``--peer`` (the first validator; the bootstrap itself none) and
runs with discovery on; the lab's links and routes still carry and shape every byte. After the
load phase each node's ``/peers/table`` (table size) and ``/metrics`` (``kad_lookup_seconds``,
``kad_lookup_hops`` histograms) are read, and the lookup latency is set beside the topology's
path RTTs (shortest path over the lab's links, every node pair).
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any

from netdiag.bench.p2p_driver import ClusterDriver
from netdiag.bench.p2p_topology import ClusterGraph
from netdiag.lab.cluster import NodeRun
from netdiag.nodeapi import parse_metrics

LOOKUP_SECONDS = "netdiag_node_kad_lookup_seconds"
LOOKUP_HOPS = "netdiag_node_kad_lookup_hops"


def histogram_buckets(metrics: dict[str, float], name: str) -> dict[float, float]:
    """Cumulative bucket counts {le: count} of one histogram in parse_metrics' output."""
    out: dict[float, float] = {}
    prefix = f"{name}_bucket{{"
    for key, v in metrics.items():
        if not key.startswith(prefix):
            continue
        labels = dict(p.split("=", 1) for p in key[len(prefix) : -1].split(",") if "=" in p)
        if "le" in labels:
            out[float(labels["le"])] = out.get(float(labels["le"]), 0.0) + v
    return out


def pooled_buckets(per_node: list[dict[float, float]]) -> dict[float, float]:
    """The cluster's histogram: cumulative counts add up bucket by bucket."""
    out: dict[float, float] = {}
    for b in per_node:
        for le, v in b.items():
            out[le] = out.get(le, 0.0) + v
    return out


def histogram_quantile(buckets: dict[float, float], q: float) -> float | None:
    """Prometheus' histogram_quantile: linear within the bucket that holds rank q·count.

    A rank in the +Inf bucket answers the highest finite bound (what is known of it)."""
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower_le, lower_count = 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank:
            if math.isinf(le):
                return lower_le
            if count == lower_count:
                return le
            return lower_le + (le - lower_le) * (rank - lower_count) / (count - lower_count)
        lower_le, lower_count = le, count
    return lower_le


def histogram_bound(buckets: dict[float, float], q: float) -> float | None:
    """The upper bound of the bucket holding rank q·count: for whole-number samples in buckets
    one wide (lookup hops), the quantile itself; interpolating would answer 0.52 hops."""
    bounds = sorted(b for b in buckets if not math.isinf(b))
    total = max(buckets.values(), default=0.0)
    if total <= 0:
        return None
    return next((le for le in bounds if buckets[le] >= q * total), bounds[-1] if bounds else None)


def path_rtts_s(
    graph: ClusterGraph, nodes: list[str], next_hop: dict[str, dict[str, str]] | None = None
) -> list[float]:
    """Round-trip time of every unordered pair of `nodes` over the lab's links: along the lab's
    routes (`next_hop`, netdiag.lab.topology.routes: fewest hops, so a route may cost more than
    the cheapest path) when given, else along the lowest-delay path."""
    if next_hop is None:
        one_way = graph.one_way_s()
        return [
            2 * one_way[a][b]
            for i, a in enumerate(nodes)
            for b in nodes[i + 1 :]
            if b in one_way.get(a, {})
        ]
    out: list[float] = []
    for i, a in enumerate(nodes):
        for b in nodes[i + 1 :]:
            rtt = routed_rtt_s(graph, next_hop, a, b)
            if rtt is not None:
                out.append(rtt)
    return out


def routed_rtt_s(
    graph: ClusterGraph, next_hop: dict[str, dict[str, str]] | None, a: str, b: str
) -> float | None:
    """Round-trip time from a to b and back over the lab's links: along the lab's routes
    (`next_hop`) when given, else the lowest-delay path. None: no path."""
    if a == b:
        return 0.0
    if next_hop is None:
        one_way = graph.one_way_s().get(a, {}).get(b)
        return None if one_way is None else 2 * one_way
    link = {frozenset((x, y)): rtt for x, y, rtt in graph.edges}

    def routed_one_way(src: str, dst: str) -> float | None:
        total, cur = 0.0, src
        for _ in range(len(graph.nodes)):
            if cur == dst:
                return total
            nxt = next_hop.get(cur, {}).get(dst)
            if nxt is None or frozenset((cur, nxt)) not in link:
                return None
            total += link[frozenset((cur, nxt))] / 2
            cur = nxt
        return total if cur == dst else None

    there, back = routed_one_way(a, b), routed_one_way(b, a)
    return None if there is None or back is None else there + back


def discovery_summary(
    variant: str,
    rows: list[dict[str, Any]],
    sec: dict[float, float],
    hops: dict[float, float],
    rtts_s: list[float],
) -> dict[str, Any]:
    """One summary row: table size, the cluster's lookup latency and hops (histograms pooled
    over nodes and rounds), and the path RTTs beside them. `rows` are the per-node records."""
    sizes = [int(r["table_entries"]) for r in rows if r["table_entries"] is not None]
    peers = [int(r["peers"]) for r in rows if r["peers"] is not None]

    def ms(v: float | None) -> float | None:
        return None if v is None else round(v * 1000, 2)

    p50, p90 = histogram_quantile(sec, 0.5), histogram_quantile(sec, 0.9)
    rtt_median = statistics.median(rtts_s) if rtts_s else None
    h50 = histogram_bound(hops, 0.5)
    return {
        "variant": variant,
        "mesh": "discovery",
        "nodes": len({r["node"] for r in rows}),
        "table_entries_min": min(sizes) if sizes else None,
        "table_entries_median": statistics.median(sizes) if sizes else None,
        "peers_min": min(peers) if peers else None,
        "lookups": int(max(sec.values(), default=0.0)),
        "lookup_p50_ms": ms(p50),
        "lookup_p90_ms": ms(p90),
        "hops_p50": None if h50 is None else round(h50, 2),
        "path_rtt_mean_ms": ms(statistics.mean(rtts_s)) if rtts_s else None,
        "path_rtt_median_ms": ms(rtt_median),
        # a lookup costs about hops sequential round trips: its latency in median path RTTs
        "lookup_p50_in_rtts": round(p50 / rtt_median, 2) if p50 and rtt_median else None,
    }


class DiscoveryPhase(ClusterDriver):
    def _bootstrap_peers(self, lab: Any, runs: dict[str, NodeRun]) -> None:
        """One bootstrap for everyone (the first validator), discovery on for every node."""
        from netdiag.lab.cluster import P2P_PORT

        boot = self.validators[0]
        for n, r in runs.items():
            r.discovery = True
            # every lab node sits on 10.0.0.0/24, which the eclipse limits take for one operator
            # (one table dial per /24: no mesh beyond the bootstrap); in the lab they are lifted
            r.env = r.env | {
                "NETDIAG_NODE_KAD_OUTBOUND_PER_SUBNET": str(len(runs)),
                "NETDIAG_NODE_KAD_SUBNET_BUCKET": str(len(runs)),
                "NETDIAG_NODE_KAD_SUBNET_TABLE": str(len(runs)),
            }
            r.peers = [] if n == boot else [f"{lab.addr(boot)}:{P2P_PORT}"]

    def _wait_mesh(self, runs: list[NodeRun], timeout_s: float = 30.0) -> float | None:
        """Seconds until every node holds a peer besides the bootstrap (or each other one when
        the cluster is that small): the DHT, not the bootstrap's star, carries the mesh."""
        need = min(2, len(runs) - 1)
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            counts = self._each(runs, lambda r: len(r.client().peers()))
            if counts and all(c is not None and c >= need for c in counts.values()):
                return round(time.monotonic() - t0, 3)
            time.sleep(0.5)
        self.notes.append(
            f"discovery: not every node held {need} peers within {timeout_s:.0f} s of start-up"
        )
        return None

    def _record_discovery(self, variant: str, runs: list[NodeRun], mesh_s: float | None) -> None:
        """Per node: table size, peers, lookups (rows); the kad histograms pooled per variant."""

        def read(r: NodeRun) -> tuple[int, int, dict[float, float], dict[float, float]]:
            api = r.client()
            table = api.get_json("/peers/table")
            metrics = parse_metrics(api.metrics_text())
            return (
                int(table.get("size", 0)),
                len(api.peers()),
                histogram_buckets(metrics, LOOKUP_SECONDS),
                histogram_buckets(metrics, LOOKUP_HOPS),
            )

        got = self._each(runs, read)
        sec, hops = self.kad_buckets.setdefault(variant, ({}, {}))
        for r in runs:
            g = got.get(r.name)
            if g is not None:
                sec.update(pooled_buckets([sec, g[2]]))
                hops.update(pooled_buckets([hops, g[3]]))
            node_sec = g[2] if g else {}
            p50 = histogram_quantile(node_sec, 0.5)
            self.result.record(
                "discovery",
                {
                    "variant": variant,
                    "round": self.round,
                    "node": r.name,
                    "mesh_formed_s": mesh_s,
                    "table_entries": g[0] if g else None,
                    "peers": g[1] if g else None,
                    "lookups": int(max(node_sec.values(), default=0.0)),
                    "lookup_p50_ms": None if p50 is None else round(p50 * 1000, 2),
                },
            )

    def _summarise_discovery(self, variant: str) -> None:
        rows = [r for r in self.result.raw.get("discovery", []) if r["variant"] == variant]
        if not rows:
            return
        sec, kad_hops = self.kad_buckets.get(variant, ({}, {}))
        from netdiag.lab.topology import routes

        hops = routes(self.lab.topology) if self.lab is not None else None
        rtts = path_rtts_s(self.graph, [n for n in self.names if n != self.late_joiner], hops)
        row = discovery_summary(variant, rows, sec, kad_hops, rtts)
        formed = [float(r["mesh_formed_s"]) for r in rows if r["mesh_formed_s"] is not None]
        row["mesh_formed_s"] = round(statistics.median(formed), 3) if formed else None
        self.result.add_summary("discovery", row)
