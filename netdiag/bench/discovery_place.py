"""Where `bench discovery` runs its nodes: a lab (namespaces joined by links with WAN delays,
the default where root and namespaces are available) or loopback.

Lab: the honest nodes n01…nNN sit on a seeded graph (`bench p2p`'s, p2p_topology: degree 3,
log-normal link RTTs around 40 ms), one /24 each (10.I.0.1) so the eclipse limits judge them as
distinct operators; three more namespaces hang off seeded honest nodes: ``syb`` holds the 32
Sybil identities' addresses on one /24 (10.200.0.1…, one process per identity, all in that
namespace, dialling out from its first address as identities behind one host do), ``vic`` and
``vics`` the two victims. The lab is built and torn down by netdiag.lab (Lab.up), the processes
started with Lab.popen and the argv of netdiag.lab.cluster (the one cluster launcher).

Loopback: the same processes on 127.77.I.1 (Sybils 127.78.0.I, victims 127.79.x.1), with no
delays: the lookup latency is then the nodes' processing and handshakes only.

``rtt_s(a, b)`` answers the path RTT between the nodes holding two addresses, along the lab's
routes (0 on loopback).
"""

from __future__ import annotations

import contextlib
import random
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netdiag.bench import p2p_topology
from netdiag.bench.p2p_discovery import routed_rtt_s
from netdiag.lab.cluster import node_env

SYBIL_NODE, VICTIM_NODE, VICTIM_S_NODE = "syb", "vic", "vics"


@dataclass
class Placement:
    kind: str  # lab | loopback
    honest: list[str]  # honest node i's address
    sybil_net: str  # "A.B.C" of the Sybils' /24
    victim: str
    victim_s: str
    lab: Any = None  # netdiag.lab.Lab
    graph: p2p_topology.ClusterGraph | None = None
    node_of: dict[str, str] = field(default_factory=dict)  # address -> lab node
    next_hop: dict[str, dict[str, str]] | None = None
    engine: str | None = None

    def sybil(self, i: int) -> str:
        return f"{self.sybil_net}.{i + 1}"

    def ns(self, host: str) -> str | None:
        return self.lab.ns(self.node_of[host]) if self.lab is not None else None

    def start(
        self, host: str, argv: list[str], log: Path, env: dict[str, str]
    ) -> subprocess.Popen[Any]:
        if self.lab is not None:
            return self.lab.popen(self.node_of[host], argv, log=log, kind="node", env=node_env(env))  # type: ignore[no-any-return]
        with log.open("wb") as f:
            return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=f, env=node_env(env))

    def rtt_s(self, a: str, b: str) -> float | None:
        """Path RTT between the nodes holding addresses a and b (lab routes); 0 on loopback."""
        if self.graph is None:
            return 0.0
        na, nb = self.node_of.get(a), self.node_of.get(b)
        if na is None or nb is None:
            return None
        return routed_rtt_s(self.graph, self.next_hop, na, nb)

    def metadata(self) -> dict[str, Any]:
        if self.graph is None:
            return {"where": "loopback", "topology": "loopback, one /24 per node", "rtt_ms": 0}
        honest = set(self.graph.nodes[: len(self.honest)])
        return {
            "where": "lab",
            "engine": self.engine,
            "lab": self.lab.metadata() if self.lab is not None else None,
            "edges": [list(e) for e in self.graph.edges],
            "honest_nodes": sorted(honest),
            "addresses": {h: n for h, n in self.node_of.items() if not h.startswith("10.200.")},
        }


def loopback(n: int) -> Placement:
    return Placement("loopback", [f"127.77.{i}.1" for i in range(n)], "127.78.0",
                     "127.79.0.1", "127.79.1.1")  # fmt: skip


def graph(n: int, seed: int) -> p2p_topology.ClusterGraph:
    """The honest nodes' seeded graph (bench p2p's draw) and the three extra namespaces, each on
    one link with a drawn RTT to a seeded honest node."""
    d = min(3, n - 1)
    if (n * d) % 2:
        d += 1
    base = p2p_topology.build(n, "regular", d, seed)
    rng = random.Random(seed * 7919 + n)
    extra = tuple(
        (name, rng.choice(base.nodes), p2p_topology.draw_rtt(rng))
        for name in (SYBIL_NODE, VICTIM_NODE, VICTIM_S_NODE)
    )
    return p2p_topology.ClusterGraph(
        (*base.nodes, SYBIL_NODE, VICTIM_NODE, VICTIM_S_NODE), base.edges + extra
    )


@contextlib.contextmanager
def lab(
    n: int, sybils: int, seed: int, profile: str, engine: str, name: str
) -> Iterator[Placement]:
    """Bring the lab up for the run; every namespace, link and process goes at the end."""
    from netdiag.lab import Lab
    from netdiag.lab.topology import routes

    g = graph(n, seed)
    honest = [f"10.{i + 1}.0.1" for i in range(n)]
    sybil_hosts = [f"10.200.0.{i + 1}" for i in range(max(1, sybils))]
    addrs: dict[str, tuple[str, ...]] = {
        **{g.nodes[i]: (f"{h}/32",) for i, h in enumerate(honest)},
        SYBIL_NODE: tuple(f"{h}/32" for h in sybil_hosts),
        VICTIM_NODE: ("10.201.0.1/32",),
        VICTIM_S_NODE: ("10.202.0.1/32",),
    }
    topo = p2p_topology.to_lab(
        g, name, p2p_topology.PROFILES[profile], seed, engine, addresses=addrs
    )
    node_of = {a.split("/")[0]: node for node, al in addrs.items() for a in al}
    with Lab.up(topo) as lb:
        yield Placement(
            "lab",
            honest,
            "10.200.0",
            "10.201.0.1",
            "10.202.0.1",
            lab=lb,
            graph=g,
            node_of=node_of,
            next_hop=routes(topo),
            engine=lb.engine.name,
        )
