"""The one launcher of reference-node clusters: genesis, `netdiag node run` argv, processes.

Used by labs with `role = "node"` nodes and by `bench p2p` / `bench sync`. The node is a
separate program driven only through its command line and REST API (the dependency rule: lab
never imports netdiag.node); ports are the node's defaults from `netdiag.nodeapi`.

A lab generates one genesis for its cluster (`netdiag node genesis`, deterministic from the
lab's seed), gives role node i validator key i, listens on the node's own address and wires
each node's bootstrap peers from its links.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netdiag.errors import NetdiagError
from netdiag.lab.topology import Topology
from netdiag.nodeapi import API_PORT, P2P_PORT, NodeApi

__all__ = ["API_PORT", "P2P_PORT", "Genesis", "NodeRun", "make_genesis", "node_run_argv"]


def node_available() -> bool:
    return importlib.util.find_spec("netdiag.cli.node") is not None


def netdiag_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "netdiag.cli.main", *args]


@dataclass(frozen=True)
class Genesis:
    """What `netdiag node genesis` wrote: the genesis file and validator i's key file."""

    path: Path
    keys: list[Path]
    node_ids: list[str]


def make_genesis(out: Path, validators: int, seed: str, slot_ms: int | None = None) -> Genesis:
    """`netdiag node genesis` into `out` (genesis.json, validator-<i>.key)."""
    argv = netdiag_argv(
        "node", "genesis", "--validators", str(validators), "--lab-seed", seed, "--out", str(out)
    )
    if slot_ms is not None:
        argv += ["--slot-ms", str(slot_ms)]
    res = subprocess.run([*argv, "--json"], capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        raise NetdiagError(
            f"`netdiag node genesis` failed (exit {res.returncode}): {res.stderr.strip()[-400:]}",
            "check that the reference node is installed (`netdiag node --help`)",
        )
    doc = json.loads(res.stdout)
    vals = doc["validators"]
    return Genesis(
        Path(doc["genesis"]), [Path(v["key"]) for v in vals], [str(v["node_id"]) for v in vals]
    )


def node_run_argv(
    data_dir: Path,
    genesis: Path,
    listen: str,
    api: str,
    *,
    key: Path | None = None,
    peers: list[str] = [],  # noqa: B006 - read only
    tls: bool | None = None,
    log_level: str | None = None,
    discovery: bool | None = None,
) -> list[str]:
    """`netdiag node run` with everything on its command line (nothing inherited by accident
    but what `node_env` passes)."""
    argv = netdiag_argv(
        "node",
        "run",
        *("--data-dir", str(data_dir), "--genesis", str(genesis)),
        *("--listen", listen, "--api", api),
    )
    if tls is not None:
        argv.append("--tls" if tls else "--no-tls")
    if key is not None:
        argv += ["--key", str(key)]
    if log_level is not None:
        argv += ["--log-level", log_level]
    if discovery is not None:  # off: the node dials exactly its --peer list (a fixed graph)
        argv.append("--discovery" if discovery else "--no-discovery")
    for peer in peers:
        argv += ["--peer", peer]
    return argv


def node_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without NETDIAG_NODE_* (a node gets only what it is given)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETDIAG_NODE_")}
    return env | (extra or {})


# -- labs with role = "node" -------------------------------------------------------------------


def node_argvs(topo: Topology, work: Path) -> dict[str, list[str]]:
    """argv of `netdiag node run` for every role node, peers wired along the links."""
    roles = [n for n in topo.nodes if n.role == "node"]
    if not roles:
        return {}
    gen = make_genesis(work / "genesis", len(roles), f"lab-{topo.name}-{topo.seed}")
    addr = {n.name: n.address for n in topo.nodes}
    names = {r.name for r in roles}
    out: dict[str, list[str]] = {}
    for i, n in enumerate(roles):
        peers = [ln.b if ln.a == n.name else ln.a for ln in topo.links if n.name in (ln.a, ln.b)]
        out[n.name] = node_run_argv(
            work / "nodes" / n.name,
            gen.path,
            f"{n.address}:{P2P_PORT}",
            f"{n.address}:{API_PORT}",
            key=gen.keys[i],
            peers=[f"{addr[p]}:{P2P_PORT}" for p in peers if p in names],
        )
    return out


def api_client(ns: str, address: str, timeout: float = 3.0) -> NodeApi:
    """Client of a lab role node's API (it listens on the node's lab address)."""
    return NodeApi(ns, API_PORT, address, timeout)


# -- clusters a benchmark drives process by process --------------------------------------------


@dataclass
class NodeRun:
    """One node process of a benchmark's cluster and what was read from outside it."""

    name: str
    ns: str | None
    data_dir: Path
    key: Path | None
    peers: list[str]
    proc: subprocess.Popen[Any] | None = None
    api: NodeApi | None = None
    cpu_start_s: float | None = None
    cpu_end_s: float | None = None
    metrics_start: dict[str, float] = field(default_factory=dict)
    metrics_end: dict[str, float] = field(default_factory=dict)
    in_load: bool = True  # took part in the load phase (delivery is expected)
    env: dict[str, str] = field(default_factory=dict)  # NETDIAG_NODE_* for this node only
    discovery: bool = False  # Kademlia peers (bench p2p --discovery) instead of the graph

    def client(self) -> NodeApi:
        if self.api is None:
            self.api = NodeApi(self.ns, API_PORT)
        return self.api

    def argv(self, genesis: Path, addr: str, tls: bool) -> list[str]:
        """Listen on the node's lab address; the API on loopback inside its namespace."""
        return node_run_argv(
            self.data_dir,
            genesis,
            f"{addr}:{P2P_PORT}",
            f"127.0.0.1:{API_PORT}",
            key=self.key,
            peers=self.peers,
            tls=tls,
            discovery=self.discovery,
        )


def tail(log: Path, lines: int = 2) -> str:
    try:
        return " | ".join(log.read_text(errors="replace").splitlines()[-lines:])[-600:]
    except OSError:
        return "no log"


def pids_cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds of these processes (0 for any that are gone)."""
    import psutil

    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
    return total


def cpu_s(r: NodeRun) -> float | None:
    if r.proc is None:
        return None
    try:
        import psutil

        t = psutil.Process(r.proc.pid).cpu_times()
        return float(t.user + t.system)
    except Exception:  # the process is gone: no figure rather than a wrong one
        return None
