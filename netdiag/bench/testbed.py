"""A three-namespace path for probe tests and benchmarks: client — router — server.

    client a (198.18.0.1) ══ veth ══ router r ══ veth (TBF) ══ (198.18.0.6) server b

Built by the lab (`kind = "veth"` links: plain kernel veth pairs, no userspace forwarder, so
multi-Gbit overhead runs measure the kernel, not an emulator), which records it in its state
file: `netdiag lab down --all` (or the next `path3()` of any process, see `reap_stale`)
removes it after a kill -9. The node addresses come from 198.18.0.0/15 (RFC 2544
benchmarking) and exist only inside these namespaces. An optional TBF on the router -> server
link makes real loss (the sender sees retransmits; a qdisc drop on the sender's own host
would only throttle it). `gso_max_segs 1` on the client and server makes every skb one
segment, so the retransmit tracepoint (one event per skb) and the kernel's TcpRetransSegs
(per segment) count the same thing.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

from netdiag.lab import Lab, state, teardown
from netdiag.lab.topology import LinkShape, LinkSpec, NodeSpec, Topology, validate

LAB_PREFIX = "tb"  # testbed labs: tb<pid>x<hex>, so a stale one names its creator
CLIENT_IP = "198.18.0.1"
SERVER_IP = "198.18.0.6"
ROUTER_IP = "198.18.0.2"
MTU = 1500
QUEUE_BYTES = 20_000  # the router's TBF queue: a few packets, so a 50 Mbit flow sees drops


def topology(name: str, rate_mbit: float | None = None) -> Topology:
    """client a — router r — server b on veth links; the r—b link shaped when rate_mbit."""
    shaped = LinkShape(
        rate_bps=int(rate_mbit * 1e6) if rate_mbit else 0,
        queue_pkts=math.ceil(QUEUE_BYTES / MTU),
    )
    topo = Topology(
        name=name,
        nodes=(
            NodeSpec("a", (f"{CLIENT_IP}/32",)),
            NodeSpec("r", (f"{ROUTER_IP}/32",)),
            NodeSpec("b", (f"{SERVER_IP}/32",)),
        ),
        links=(LinkSpec("a", "r", LinkShape(), "veth"), LinkSpec("r", "b", shaped, "veth")),
        mtu=MTU,
    )
    validate(topo)
    return topo


@dataclass(frozen=True)
class Path3:
    lab: Lab
    client: str  # namespace names
    router: str
    server: str
    client_ip: str = CLIENT_IP
    server_ip: str = SERVER_IP

    def exec(self, ns: str, *cmd: str) -> list[str]:
        return ["ip", "netns", "exec", ns, *cmd]

    def set_rate(self, rate_mbit: float | None, limit_bytes: int = QUEUE_BYTES) -> None:
        """Shape (and drop) toward the server; None removes the shaper."""
        self.lab.set_link(
            "r",
            "b",
            rate_bps=int(rate_mbit * 1e6) if rate_mbit else 0,
            queue_pkts=max(1, math.ceil(limit_bytes / MTU)),
        )


def reap_stale() -> list[str]:
    """Remove testbed labs whose creating process is gone (after a kill -9)."""
    gone = []
    for name in state.names():
        rec = state.read(name) or {}
        sup = rec.get("supervisor")
        if name.startswith(LAB_PREFIX) and not (sup and state.alive(sup)):
            teardown.down(name)
            gone.append(name)
    return gone


@contextlib.contextmanager
def path3(rate_mbit: float | None = None, one_segment_skbs: bool = True) -> Iterator[Path3]:
    reap_stale()
    name = f"{LAB_PREFIX}{os.getpid()}x{secrets.token_hex(2)}"[:16]
    with Lab.up(topology(name, rate_mbit)) as lab:
        if one_segment_skbs:
            for node, peer in (("a", "r"), ("b", "r")):
                dev = lab.link_devices(node, peer)[0]
                lab.exec(node, ["ip", "link", "set", "dev", dev, "gso_max_segs", "1"], check=True)
        yield Path3(lab, lab.ns("a"), lab.ns("r"), lab.ns("b"))
