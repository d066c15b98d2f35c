"""`netdiag bench p2p --target FILE`: the load and propagation phases against nodes the bench
did not start (a deployment: hosts, a Kubernetes StatefulSet), reached only through their APIs.

The file lists the nodes (TOML, or JSON with the same structure):

    [[node]]
    api = "http://netdiag-node-0.netdiag-node.netdiag.svc.cluster.local:7601"
    name = "node-0"    # optional: how the result names it (default node-<index>)
    netns = "blue"     # optional: a network namespace of this host the API is reached from

What differs from a lab run, and why:
- no cc variants, faults, link shaping, sync phase or socket samples: those need control of the
  nodes' hosts; the run has one variant, `deployed`, and the hosts keep their own settings;
- first-seen times come from the age each node reports, placed at the midpoint of the
  request's round trip (the nodes' clocks are not this host's): half the round trip is each
  figure's error bound, carried into `time_error_p99_ms`; each node's API round trip (min of 5)
  is in the result's metadata;
- no lower bound per path (the deployment's link delays are not known): `p99_over_bound` is empty.
"""

from __future__ import annotations

import contextlib
import json
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netdiag.bench.p2p_driver import P2PParams, Reporter, _retry
from netdiag.bench.p2p_figures import FigurePhase
from netdiag.bench.p2p_load import LoadPhase
from netdiag.bench.p2p_syncphase import SyncPhase
from netdiag.bench.p2p_topology import ClusterGraph
from netdiag.errors import InputError, NetdiagError
from netdiag.lab.cluster import NodeRun
from netdiag.nodeapi import NodeApi, NodeUnavailable, parse_address
from netdiag.report.results import ResultBuilder

VARIANT = "deployed"
NODE_KEYS = ("api", "name", "netns")
FORMAT_HINT = (
    'each [[node]] needs api = "http://HOST:PORT" (see docs/deploy.md, bench p2p --target)'
)


@dataclass(frozen=True)
class TargetNode:
    name: str
    api: str  # http://HOST:PORT
    netns: str | None = None


def load_target(path: Path) -> list[TargetNode]:
    """Parse and check a target file; InputError (exit 2) naming the line or key otherwise."""
    try:
        text = path.read_text()
    except OSError as e:
        raise InputError(f"target file {path}: {e.strerror}", "give a readable file") from None
    try:
        doc = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: line {e.lineno}: {e.msg}", FORMAT_HINT) from None
    except tomllib.TOMLDecodeError as e:  # its message names the line and column
        raise InputError(f"{path}: {e}", FORMAT_HINT) from None
    return parse_target(doc, str(path))


def parse_target(doc: Any, where: str) -> list[TargetNode]:
    if not isinstance(doc, dict):
        raise InputError(f"{where}: expected a table with a node list", FORMAT_HINT)
    extra = sorted(set(doc) - {"node"})
    if extra:
        raise InputError(
            f"{where}: unknown key {extra[0]!r}", "the file holds [[node]] tables only"
        )
    items = doc.get("node")
    if not isinstance(items, list) or len(items) < 2:
        raise InputError(
            f"{where}: 'node' must list at least 2 nodes (found "
            f"{len(items) if isinstance(items, list) else 0})",
            "propagation needs an origin and a receiver: " + FORMAT_HINT,
        )
    out: list[TargetNode] = []
    for i, item in enumerate(items):
        key = f"{where}: node[{i}]"
        if not isinstance(item, dict):
            raise InputError(f"{key}: expected a table", FORMAT_HINT)
        unknown = sorted(set(item) - set(NODE_KEYS))
        if unknown:
            raise InputError(f"{key}: unknown key {unknown[0]!r}", f"keys: {', '.join(NODE_KEYS)}")
        for k in NODE_KEYS:
            if k in item and not isinstance(item[k], str):
                raise InputError(f"{key}.{k}: expected a string", FORMAT_HINT)
        if "api" not in item:
            raise InputError(f"{key}: missing key 'api'", FORMAT_HINT)
        if item["api"].strip().startswith("https://"):
            raise InputError(f"{key}.api: https is not supported", "the node's API is plain http")
        try:
            host, port = parse_address(item["api"])
        except ValueError as e:
            raise InputError(f"{key}.api: {e}", 'e.g. api = "http://10.0.0.5:7601"') from None
        name = item.get("name") or f"node-{i}"
        if name in {n.name for n in out}:
            raise InputError(f"{key}.name: {name!r} is used twice", "give each node its own name")
        out.append(TargetNode(name, f"http://{host}:{port}", item.get("netns") or None))
    return out


class TargetBench(LoadPhase, SyncPhase, FigurePhase):
    """One `bench p2p --target` run: the load phase and chain agreement on deployed nodes."""

    def __init__(
        self, params: P2PParams, targets: list[TargetNode], report: Reporter | None = None
    ) -> None:
        names = [t.name for t in targets]
        self._init_run(params, report, None, names)
        self.targets = targets
        self.same_clock = False
        self.graph = ClusterGraph(tuple(names), ())  # link delays unknown: no lower bounds
        self.validators: list[str] = []
        self.late_joiner = self.victim = self.forger = ""
        self.result.variants = [VARIANT]
        self.result.parameters = {
            "target_nodes": len(targets),
            "tx_rate": params.tx_rate,
            "tx_bytes": params.tx_bytes,
            "duration_s": params.duration_s,
            "tx_sample_every": params.tx_sample_every,
            "settle_s": params.settle_s,
        }

    def _alive(self, r: NodeRun) -> bool:
        return True  # not our processes: a node that does not answer maps to None per query

    def run(self) -> ResultBuilder:
        runs = {
            t.name: NodeRun(t.name, t.netns, Path(), None, [], api=NodeApi.at(t.api, t.netns))
            for t in self.targets
        }
        try:
            self._phase("contacting nodes")
            status = {n: self._status(r) for n, r in runs.items()}
            networks = {str(st.get("network_id")) for st in status.values()}
            if len(networks) > 1:
                detail = ", ".join(f"{n}: {st.get('network_id')}" for n, st in status.items())
                raise InputError(
                    f"the target's nodes are on different networks ({detail})",
                    "list the nodes of one deployment",
                )
            producer_of = {str(st["node_id"]): n for n, st in status.items()}
            self.result.link_engine = "deployed"
            self.result.metadata.update(
                target={
                    "nodes": [
                        {
                            "name": t.name,
                            "api": t.api,
                            "netns": t.netns,
                            "node_id": str(status[t.name]["node_id"])[:16],
                            "height": status[t.name].get("height"),
                            "peers": status[t.name].get("peers"),
                            "api_rtt_ms": self._api_rtt_ms(runs[t.name]),
                        }
                        for t in self.targets
                    ],
                    "network_id": networks.pop(),
                },
                roles={"validators": [], "late_joiner": None, "restart_victim": None},
            )
            self.progress.variant = VARIANT
            active, load_s = self._load(None, VARIANT, runs, producer_of, time.monotonic())
            self._record_round(VARIANT, active, load_s)
            self._check_agreement(VARIANT, active)
            for (v, why), count in sorted(self.skipped.items()):
                if v == VARIANT:
                    self.notes.append(f"{VARIANT}: {count} messages not followed ({why})")
            self._summarise(VARIANT)
        finally:
            self.pool.shutdown(wait=True)
            for r in runs.values():
                if r.api is not None:
                    r.api.close()
        self.result.metadata["notes"] = self.notes
        return self.result

    def _status(self, r: NodeRun) -> dict[str, Any]:
        api = r.client()
        try:
            st: dict[str, Any] = _retry(api.status, tries=3)
        except NetdiagError as e:
            raise NetdiagError(
                f"target node {r.name} ({api.url}) did not answer /status: {e.what}",
                "check the address in the target file and that the node runs",
            ) from None
        if "node_id" not in st:
            raise NetdiagError(
                f"target node {r.name} ({api.url}): /status has no node_id",
                "point the target at `netdiag node run` APIs",
            )
        return st

    @staticmethod
    def _api_rtt_ms(r: NodeRun) -> float | None:
        best = None
        for _ in range(5):
            with contextlib.suppress(NodeUnavailable):
                t0 = time.monotonic()
                r.client().status()
                rtt = (time.monotonic() - t0) * 1e3
                best = rtt if best is None else min(best, rtt)
        return None if best is None else round(best, 3)
