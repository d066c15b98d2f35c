"""Seeded cluster topologies for `bench p2p`: graph shape, WAN-like link delays, lower bounds.

A topology is a connected graph on nodes n01…nNN. Shapes: ``regular`` (random d-regular, the
configuration model with retries) and ``smallworld`` (Watts–Strogatz ring of degree d with
rewiring probability 0.2). Per-link round-trip delays are drawn from a log-normal around 40 ms
(5–200 ms), a rough fit to inter-datacentre RTTs. Everything comes from one seed, so two runs
with the same seed (e.g. cubic then bbr) see the same network.
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from netdiag.errors import InputError

if TYPE_CHECKING:
    from netdiag.lab.topology import Topology

SHAPES = ("regular", "smallworld")
RTT_MEDIAN_S = 0.040
RTT_SIGMA = 0.6
RTT_MIN_S, RTT_MAX_S = 0.005, 0.200


@dataclass(frozen=True)
class LinkProfile:
    """Per-link rate, loss and queue; delays come from the topology's draw."""

    name: str
    rate_bps: int
    loss: float
    queue: str = "1bdp"


PROFILES = {
    "wan": LinkProfile("wan", 100_000_000, 0.001),
    "lossy-wan": LinkProfile("lossy-wan", 100_000_000, 0.01),
    "clean": LinkProfile("clean", 100_000_000, 0.0),
}


@dataclass(frozen=True)
class ClusterGraph:
    nodes: tuple[str, ...]
    edges: tuple[tuple[str, str, float], ...]  # (a, b, round-trip delay in s)

    def neighbours(self, node: str) -> list[str]:
        return [b if a == node else a for a, b, _ in self.edges if node in (a, b)]

    def one_way_s(self, exclude: frozenset[str] = frozenset()) -> dict[str, dict[str, float]]:
        """All-pairs shortest one-way latency (half of each link's RTT), Dijkstra per source."""
        return self.paths(exclude)[0]

    def paths(
        self, exclude: frozenset[str] = frozenset(), per_hop_s: float = 0.0
    ) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, int]]]:
        """``one_way_s`` and the hop count of each of those lowest-latency paths. ``per_hop_s``
        adds a cost to every hop: a message's serialisation at the link rate, for the
        store-and-forward bound (a relay must hold the whole message before it can check it)."""
        adj: dict[str, list[tuple[str, float]]] = {n: [] for n in self.nodes if n not in exclude}
        for a, b, rtt in self.edges:
            if a in adj and b in adj:
                adj[a].append((b, rtt / 2 + per_hop_s))
                adj[b].append((a, rtt / 2 + per_hop_s))
        out: dict[str, dict[str, float]] = {}
        hops_out: dict[str, dict[str, int]] = {}
        for src in adj:
            dist = {src: 0.0}
            hops = {src: 0}
            heap = [(0.0, src)]
            while heap:
                d, u = heapq.heappop(heap)
                if d > dist.get(u, math.inf):
                    continue
                for v, w in adj[u]:
                    if d + w < dist.get(v, math.inf):
                        dist[v] = d + w
                        hops[v] = hops[u] + 1
                        heapq.heappush(heap, (d + w, v))
            out[src] = dist
            hops_out[src] = hops
        return out, hops_out

    def connected(self, exclude: frozenset[str] = frozenset()) -> bool:
        lat = self.one_way_s(exclude)
        return all(len(d) == len(lat) for d in lat.values())


def node_names(n: int) -> tuple[str, ...]:
    width = max(2, len(str(n)))
    return tuple(f"n{i + 1:0{width}d}" for i in range(n))


def _regular(n: int, d: int, rng: random.Random) -> set[tuple[int, int]] | None:
    stubs = [i for i in range(n) for _ in range(d)]
    rng.shuffle(stubs)
    edges: set[tuple[int, int]] = set()
    for a, b in zip(stubs[::2], stubs[1::2], strict=True):
        if a == b or (min(a, b), max(a, b)) in edges:
            return None
        edges.add((min(a, b), max(a, b)))
    return edges


def _smallworld(n: int, d: int, rng: random.Random, p: float = 0.2) -> set[tuple[int, int]]:
    edges = {
        (min(i, (i + k) % n), max(i, (i + k) % n)) for i in range(n) for k in range(1, d // 2 + 1)
    }
    for a, b in sorted(edges):
        if rng.random() < p:
            choices = [c for c in range(n) if c != a and (min(a, c), max(a, c)) not in edges]
            if choices:
                c = rng.choice(choices)
                edges.discard((a, b))
                edges.add((min(a, c), max(a, c)))
    return edges


def build(
    n: int, shape: str, degree: int, seed: int, keep_connected_without: tuple[str, ...] = ()
) -> ClusterGraph:
    """A connected graph (also connected without the nodes in `keep_connected_without`)."""
    if n < 2:
        raise InputError(f"--nodes {n} is too small", "use at least 2 nodes (4 or more for faults)")
    if shape not in SHAPES:
        raise InputError(f"topology {shape!r} is unknown", f"use one of {', '.join(SHAPES)}")
    degree = min(degree, n - 1)
    if shape == "regular" and (n * degree) % 2:
        raise InputError(
            f"no {degree}-regular graph on {n} nodes (n x d must be even)",
            "change --degree or --nodes",
        )
    rng = random.Random(seed)
    names = node_names(n)
    for _ in range(2000):
        raw = _regular(n, degree, rng) if shape == "regular" else _smallworld(n, degree, rng)
        if raw is None:
            continue
        edges = tuple((names[a], names[b], _draw_rtt(rng)) for a, b in sorted(raw))
        g = ClusterGraph(names, edges)
        if g.connected() and g.connected(frozenset(keep_connected_without)):
            return g
    raise InputError(
        f"could not draw a connected {shape} graph with n={n}, d={degree}", "raise --degree"
    )


def draw_rtt(rng: random.Random) -> float:
    """One link's round-trip delay from the log-normal WAN draw (seconds)."""
    return _draw_rtt(rng)


def _draw_rtt(rng: random.Random) -> float:
    rtt = RTT_MEDIAN_S * math.exp(rng.gauss(0.0, RTT_SIGMA))
    return round(min(RTT_MAX_S, max(RTT_MIN_S, rtt)), 4)


def to_lab(
    graph: ClusterGraph,
    name: str,
    profile: LinkProfile,
    seed: int,
    engine: str = "auto",
    addresses: dict[str, tuple[str, ...]] | None = None,
) -> Topology:
    """The lab Topology for this graph, built as data (and checked by the lab's validator).
    ``addresses``: a node's CIDRs on lo (its first one is its address); default 10.0.x.y/32."""
    from netdiag.lab import units
    from netdiag.lab.topology import (
        LinkShape,
        LinkSpec,
        NodeSpec,
        Topology,
        default_address,
        validate,
    )

    qp, qb = units.queue_spec(profile.queue)
    topo = Topology(
        name=name,
        nodes=tuple(
            NodeSpec(n, (addresses or {}).get(n) or (default_address(i),))
            for i, n in enumerate(graph.nodes)
        ),
        links=tuple(
            LinkSpec(a, b, LinkShape(rtt, 0.0, profile.rate_bps, profile.loss, qp, qb or 1.0))
            for a, b, rtt in graph.edges
        ),
        engine=engine,
        seed=seed,
        source=f"<bench p2p {name}>",
    )
    validate(topo)
    return topo
