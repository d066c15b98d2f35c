"""Node clusters: `role = "node"` nodes run `netdiag node run`, one per namespace, supervised.

The lab generates one genesis for the cluster (`netdiag node genesis`, deterministic from the
lab's seed), gives node i validator key i, listens on the node's own address and wires each
node's bootstrap peers from its links. The node is a separate program that the lab talks to
only through its command line and REST API (the dependency rule: lab never imports
netdiag.node).

When `netdiag node` is not installed (it is built on its own branch), role nodes are
reported as pending by `lab up` and `lab status` instead of started.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from netdiag.errors import NetdiagError
from netdiag.kernel import netns
from netdiag.lab.topology import NodeSpec, Topology

P2P_PORT = 7600
API_PORT = 7601


def node_available() -> bool:
    return importlib.util.find_spec("netdiag.cli.node") is not None


def netdiag_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "netdiag.cli.main", *args]


def make_genesis(topo: Topology, work: Path) -> dict[str, Any]:
    roles = [n for n in topo.nodes if n.role == "node"]
    out = work / "genesis"
    r = subprocess.run(
        netdiag_argv(
            "node",
            "genesis",
            "--validators",
            str(len(roles)),
            "--lab-seed",
            f"lab-{topo.name}-{topo.seed}",
            "--out",
            str(out),
            "--json",
        ),
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        raise NetdiagError(f"`netdiag node genesis` failed: {r.stderr.strip()}", "see the message")
    doc: dict[str, Any] = json.loads(r.stdout)
    return doc


def node_argvs(topo: Topology, work: Path) -> dict[str, list[str]]:
    """argv of `netdiag node run` for every role node, peers wired along the links."""
    roles = [n for n in topo.nodes if n.role == "node"]
    if not roles:
        return {}
    gen = make_genesis(topo, work)
    addr = {n.name: n.address for n in topo.nodes}
    out: dict[str, list[str]] = {}
    for i, n in enumerate(roles):
        peers = [ln.b if ln.a == n.name else ln.a for ln in topo.links if n.name in (ln.a, ln.b)]
        argv = netdiag_argv(
            "node",
            "run",
            "--data-dir",
            str(work / "nodes" / n.name),
            "--genesis",
            gen["genesis"],
            "--key",
            gen["validators"][i]["key"],
            "--listen",
            f"{n.address}:{P2P_PORT}",
            "--api",
            f"{n.address}:{API_PORT}",
        )
        for p in peers:
            if p in {r.name for r in roles}:
                argv += ["--peer", f"{addr[p]}:{P2P_PORT}"]
        out[n.name] = argv
    return out


def api_get(ns: str, node: NodeSpec, path: str, timeout: float = 3.0) -> Any:
    """GET a node's REST API from inside its namespace (the socket is made on a thread there)."""

    def fetch() -> Any:
        url = f"http://{node.address}:{API_PORT}{path}"
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return json.loads(resp.read())

    return netns.run_in(ns, fetch)
