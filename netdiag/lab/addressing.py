"""Addresses and routes inside a lab's namespaces (run in each namespace via netns.run_in).

Each node's address is a /32 on its `lo`; link i gets the point-to-point subnet
10.128.0.0 + 4i /30; every node gets a route to every other node along the fewest hops.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from functools import partial
from typing import Any

from netdiag.kernel import netns
from netdiag.lab.topology import NodeSpec, Topology, routes

LINK_NET = ipaddress.IPv4Address("10.128.0.0")  # link i gets 10.128.0.0 + 4i /30


def link_addresses(index: int) -> tuple[str, str]:
    base = LINK_NET + 4 * index
    return str(base + 1), str(base + 2)


def install_routes(
    topo: Topology, link_recs: list[dict[str, Any]], ns_of: Callable[[str], str]
) -> None:
    """Routes of every node, from the links as the lab recorded them (devices, addresses)."""
    # (node, neighbour) -> (device on node, neighbour's address on that link)
    hop: dict[tuple[str, str], tuple[str, str]] = {}
    for r in link_recs:
        hop[(r["a"], r["b"])] = (r["dev_a"], r["addr_b"])
        hop[(r["b"], r["a"])] = (r["dev_b"], r["addr_a"])
    addr = {n.name: n.address for n in topo.nodes}
    # every address a node holds on lo is reachable (a node may hold several: many identities
    # behind one host), each through the same neighbour as the node's first address
    held = {n.name: own_addresses(n) for n in topo.nodes}
    for src, dests in routes(topo).items():
        vias = set(dests.values())
        if len(vias) == 1 and len(dests) > 1:
            # a leaf (one neighbour): one default route instead of one per node, which
            # keeps big stars quick to build (n routes instead of n^2)
            entries = [("0.0.0.0/0", *hop[(src, vias.pop())], addr[src])]
        else:
            entries = [
                (f"{a}/32", *hop[(src, via)], addr[src])
                for d, via in dests.items()
                for a in held[d]
            ]
        if entries:
            netns.run_in(ns_of(src), partial(add_routes, entries))


def own_addresses(n: NodeSpec) -> list[str]:
    """The node's addresses on lo (its first one first), loopback ones left out."""
    out = []
    for cidr in n.addresses:
        ip = ipaddress.ip_interface(cidr).ip
        if not ip.is_loopback:
            out.append(str(ip))
    return out


def setup_node(n: NodeSpec) -> None:
    from pyroute2 import IPRoute

    with open("/proc/sys/net/ipv4/ip_forward", "w") as f:  # this thread's netns: the node's
        f.write("1")
    with IPRoute() as ipr:
        lo = ipr.link_lookup(ifname="lo")[0]
        ipr.link("set", index=lo, state="up")
        for cidr in n.addresses:
            ip = ipaddress.ip_interface(cidr).ip
            if ip.is_loopback:
                continue
            # /32 on lo: the node's identity; other nodes reach it through routes, never on-link
            ipr.addr("add", index=lo, address=str(ip), prefixlen=ip.max_prefixlen)


def link_addr(dev: str, addr: str) -> None:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=dev)[0]
        ipr.addr("add", index=idx, address=addr, prefixlen=30)
        ipr.link("set", index=idx, state="up")


def add_routes(entries: list[tuple[str, str, str, str]]) -> None:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        for dst, dev, gw, src in entries:
            idx = ipr.link_lookup(ifname=dev)[0]
            ipr.route("add", dst=dst, gateway=gw, oif=idx, prefsrc=src)
