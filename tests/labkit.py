"""Lab topologies tests share, built as data (netdiag.lab.topology), not TOML text."""

from __future__ import annotations

from netdiag.lab.topology import (
    LinkShape,
    LinkSpec,
    NodeSpec,
    Topology,
    default_address,
    validate,
)


def node_cluster(
    name: str,
    links: tuple[tuple[str, str], ...],
    *,
    delay_s: float = 0.010,
    rate_bps: int = 50_000_000,
) -> Topology:
    """Reference nodes (role = "node"), one per name in ``links`` (addresses in sorted name
    order), every link shaped alike: ``delay_s`` round trip, ``rate_bps``, a 1-BDP queue."""
    names = sorted({n for link in links for n in link})
    shape = LinkShape(delay_s=delay_s, rate_bps=rate_bps)
    topo = Topology(
        name=name,
        nodes=tuple(NodeSpec(n, (default_address(i),), role="node") for i, n in enumerate(names)),
        links=tuple(LinkSpec(a, b, shape) for a, b in links),
        source=f"<tests.labkit {name}>",
    )
    validate(topo)
    return topo
