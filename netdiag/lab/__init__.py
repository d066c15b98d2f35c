"""Lab: network namespaces joined by emulated WAN links, with supervised processes.

from netdiag.lab import Lab, two_node
with Lab.up(two_node(delay_s=0.05, rate_bps=100_000_000, loss=0.01)) as lab:
    print(lab.exec("a", ["ping", "-c", "3", lab.addr("b")]).stdout)
"""

from __future__ import annotations

from netdiag.lab import cluster
from netdiag.lab.lab import Lab
from netdiag.lab.topology import LinkShape, LinkSpec, NodeSpec, Topology, load, parse, two_node

__all__ = [
    "Lab",
    "LinkShape",
    "LinkSpec",
    "NodeSpec",
    "Topology",
    "cluster",
    "load",
    "parse",
    "two_node",
]
