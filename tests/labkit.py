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


def rtt_floor_us(rtt_us: float) -> float:
    """The least RTT a lab path of ``rtt_us`` may show: the lab subtracts its forwarder's own
    measured latency, so a link may run under its delay by the documented calibration error
    (0.1 ms + 0.5 %, issue 17) — a raw minimum of 9,984 us was seen on a 10 ms path."""
    return rtt_us * 0.995 - 100


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
