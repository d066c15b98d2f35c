"""Discovery benchmark: a cluster forms from one bootstrap through the nodes' Kademlia tables.

Real `netdiag node run` processes, one bootstrap (node 0) given to every node; placed in a lab
by default (discovery_place: one namespace per node on bench p2p's seeded graph with WAN link
delays, one /24 per node so the Sybil limits judge them as distinct operators), or on loopback
(``--where loopback``). Measured, through the nodes' REST API (netdiag.nodeapi):

- formation: seconds from the start until every node holds >= min(k, N-1) table entries, until
  the peer graph is connected, and until every node has >= min(target_outbound, N-1) peers;
- lookups: hops (sequential query steps to the nearest node found) and latency of the nodes'
  own self/refresh lookups (``/peers/table`` ``recent_lookups``), against the ceil(log2 N) goal
  and the topology: each lookup's latency over the path RTT from the asker to the nearest node
  it found, and over the largest path RTT from the asker to any honest node;
- traffic: discovery bytes per node per minute over the measurement window: discovery frames on
  peer connections (``netdiag_node_kad_bytes``) plus the probe connections' whole TCP payload —
  TLS and node handshakes included — (``netdiag_node_kad_probe_bytes``), and an estimate of
  their TCP/IP headers (``kad_probe_segments`` x 52 bytes);
- eclipse: 32 Sybil identities on one /24 join and answer every FindNode with each other only
  (LAB ONLY node hook ``debug_kad_only_subnet``); a victim then joins from the honest
  bootstrap, and a second one from a Sybil; counted: how many of each victim's outbound peers
  are Sybils (goal <= 2), and how many outbound peers it has at all.
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netdiag.bench import discovery_figures as figures
from netdiag.bench import discovery_place, output
from netdiag.bench.discovery_place import Placement
from netdiag.errors import CheckFailed
from netdiag.lab.cluster import make_genesis, node_run_argv
from netdiag.nodeapi import NodeApi, NodeUnavailable, metric_sum, parse_metrics
from netdiag.report.results import ResultBuilder

P2P_PORT = 7600
API_PORT = 7601
K = 20
TARGET_OUTBOUND = 8
SYBIL_GOAL = 2
WHERE = ("auto", "lab", "loopback")
RPC_OUTCOMES = ("ok", "timeout", "unreachable", "closed", "wrong_key", "banned", "conflict")


@dataclass
class Params:
    nodes: int = 16
    duration_s: float = 120.0
    sybils: int = 32
    refresh_s: float = 60.0  # the node's default
    timeout_s: float = 300.0
    tls: bool = True
    seed: int = 1
    where: str = "auto"  # auto: a lab where root and namespaces are available, else loopback
    profile: str = "clean"  # the lab links' rate and loss (bench p2p's profiles)
    engine: str = "auto"


@dataclass
class Proc:
    name: str
    host: str
    popen: subprocess.Popen[Any]
    log: Path
    ns: str | None = None
    api: NodeApi = field(init=False)

    def __post_init__(self) -> None:
        self.api = NodeApi(self.ns, API_PORT, self.host, 5.0)

    @property
    def addr(self) -> str:
        return f"{self.host}:{P2P_PORT}"


@dataclass
class Formation:
    tables_s: float | None = None
    connected_s: float | None = None
    mesh_s: float | None = None


class DiscoveryBench:
    def __init__(
        self, p: Params, place: Placement, say: Callable[[str], None] = lambda s: None
    ) -> None:
        self.p = p
        self.place = place
        self.say = say
        self.procs: list[Proc] = []
        self.work = Path(tempfile.mkdtemp(prefix="nd-discovery-"))
        self.t0 = 0.0
        self.genesis = self.work / "genesis" / "genesis.json"
        self.series: list[tuple[str, float, float, str]] = []  # metric, t_s, value, node
        self.up_s = 0.0
        self.formation_bytes: dict[str, dict[str, float]] = {}
        self.load: list[list[float]] = []  # host load average (1, 5, 15 min) at start and end

    # -- processes -------------------------------------------------------------------------

    def _start(
        self, name: str, host: str, peers: list[str], key: Path | None, env: dict[str, str]
    ) -> Proc:
        argv = node_run_argv(
            self.work / name,
            self.genesis,
            f"{host}:{P2P_PORT}",
            f"{host}:{API_PORT}",
            key=key,
            peers=peers,
            tls=self.p.tls,
            log_level="info",
            discovery=True,
        )
        log = self.work / f"{name}.log"
        full_env = {
            "NETDIAG_NODE_KAD_REFRESH_S": str(self.p.refresh_s),
            "NETDIAG_NODE_TARGET_OUTBOUND": str(TARGET_OUTBOUND),
            **env,
        }
        popen = self.place.start(host, argv, log, full_env)
        proc = Proc(name, host, popen, log, self.place.ns(host))
        self.procs.append(proc)
        return proc

    def _wait_up(self, procs: list[Proc], timeout_s: float = 60.0) -> None:
        """Wait for every API; the budget runs from the last node that came up, so a batch of
        32 processes starting at once on a loaded host is not held to one node's budget."""
        deadline = time.monotonic() + timeout_s
        for proc in procs:
            while True:
                if proc.popen.poll() is not None:
                    raise CheckFailed(
                        f"node {proc.name} exited with {proc.popen.returncode}: {tail(proc.log)}",
                        "run `netdiag node run` by hand with the same options to see why",
                    )
                try:
                    proc.api.status()
                    deadline = time.monotonic() + timeout_s
                    break
                except (NodeUnavailable, OSError):
                    if time.monotonic() > deadline:
                        raise CheckFailed(
                            f"node {proc.name} API did not come up in {timeout_s:g} s",
                            f"see its log {proc.log} (the work directory is kept)",
                        ) from None
                    time.sleep(0.2)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.popen.wait(15)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()
            proc.api.close()

    # -- observation -----------------------------------------------------------------------

    def _snapshot(self, procs: list[Proc]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for proc in procs:
            try:
                out[proc.name] = {
                    "table": proc.api.get_json("/peers/table"),
                    "peers": proc.api.peers(),
                }
            except (NodeUnavailable, OSError):
                out[proc.name] = {"table": {"size": 0, "node_id": ""}, "peers": []}
        return out

    @staticmethod
    def _connected(snap: dict[str, dict[str, Any]]) -> bool:
        ids = {s["table"].get("node_id"): name for name, s in snap.items()}
        adj: dict[str, set[str]] = {name: set() for name in snap}
        for name, s in snap.items():
            for p in s["peers"]:
                other = ids.get(p.get("peer_id"))
                if other is not None:
                    adj[name].add(other)
                    adj[other].add(name)
        start = next(iter(snap))
        seen, todo = {start}, [start]
        while todo:
            for nb in adj[todo.pop()]:
                if nb not in seen:
                    seen.add(nb)
                    todo.append(nb)
        return len(seen) == len(snap)

    def _form(self, honest: list[Proc]) -> Formation:
        n = len(honest)
        need_table = min(K, n - 1)
        need_peers = min(TARGET_OUTBOUND, n - 1)
        f = Formation()
        deadline = self.t0 + self.p.timeout_s
        while time.monotonic() < deadline:
            t = time.monotonic() - self.t0
            snap = self._snapshot(honest)
            for name, s in snap.items():
                self.series.append(("table_entries", t, float(s["table"]["size"]), name))
                self.series.append(("peers", t, float(len(s["peers"])), name))
            if f.tables_s is None and all(s["table"]["size"] >= need_table for s in snap.values()):
                f.tables_s = t
            if f.connected_s is None and self._connected(snap):
                f.connected_s = t
            if f.mesh_s is None and all(len(s["peers"]) >= need_peers for s in snap.values()):
                f.mesh_s = t
            if None not in (f.tables_s, f.connected_s, f.mesh_s):
                return f
            self.say(
                f"  t={t:5.1f} s  tables >= {need_table}: "
                f"{sum(s['table']['size'] >= need_table for s in snap.values())}/{n}  "
                f"peers >= {need_peers}: "
                f"{sum(len(s['peers']) >= need_peers for s in snap.values())}/{n}"
            )
            time.sleep(1.0)
        return f

    def _kad_bytes(self, procs: list[Proc]) -> dict[str, dict[str, float]]:
        """Per node: discovery frames on peer connections, probe connections' TCP payload, and
        their segments (cumulative counters)."""
        out: dict[str, dict[str, float]] = {}
        for proc in procs:
            try:
                m = parse_metrics(proc.api.metrics_text())
            except (NodeUnavailable, OSError):
                continue
            out[proc.name] = {
                "frames": metric_sum(m, "netdiag_node_kad_bytes_total"),
                "probe_payload": metric_sum(m, "netdiag_node_kad_probe_bytes_total"),
                "probe_segments": metric_sum(m, "netdiag_node_kad_probe_segments_total"),
                **{
                    f"find_{o}": metric_sum(m, "netdiag_node_kad_rpcs_total", rpc="find", outcome=o)
                    for o in RPC_OUTCOMES
                },
            }
        return out

    # -- the run ---------------------------------------------------------------------------

    def run(self) -> ResultBuilder:
        p = self.p
        gen = make_genesis(self.work / "genesis", 1, f"discovery-{p.seed}")
        self.genesis, keys = gen.path, gen.keys
        hosts = self.place.honest
        self.load.append([round(x, 2) for x in os.getloadavg()])
        self.say(f"starting {p.nodes} nodes ({self.place.kind}), one bootstrap ({hosts[0]})")
        self.t0 = time.monotonic()
        boot = self._start("n00", hosts[0], [], keys[0], {})
        self._wait_up([boot])
        honest = [boot] + [
            self._start(f"n{i:02d}", hosts[i], [boot.addr], None, {}) for i in range(1, p.nodes)
        ]
        self._wait_up(honest)
        self.up_s = time.monotonic() - self.t0
        form = self._form(honest)
        self.say(
            f"formed: tables {form.tables_s} s, connected {form.connected_s} s, "
            f"peers {form.mesh_s} s; measuring {p.duration_s:g} s of steady state"
        )
        b0, m0 = self._kad_bytes(honest), time.monotonic()
        self.formation_bytes = b0
        end = m0 + p.duration_s
        while time.monotonic() < end:
            time.sleep(min(5.0, max(0.0, end - time.monotonic())))
            t = time.monotonic() - self.t0
            for name, s in self._snapshot(honest).items():
                self.series.append(("table_entries", t, float(s["table"]["size"]), name))
                self.series.append(("peers", t, float(len(s["peers"])), name))
        b1, m1 = self._kad_bytes(honest), time.monotonic()
        minutes = (m1 - m0) / 60
        per_min = {
            n: {k: (b1[n][k] - b0[n][k]) / minutes for k in b1[n]}
            for n in b1
            if n in b0 and minutes > 0
        }
        final = self._snapshot(honest)
        lookups = [
            {"node": name, **lk}
            for name, s in final.items()
            for lk in s["table"].get("recent_lookups", [])
            if lk.get("replies", 0) > 0
        ]
        sybil = self._eclipse(boot) if p.sybils > 0 else None
        return self._result(honest, form, lookups, per_min, final, sybil)

    def _eclipse(self, boot: Proc) -> list[dict[str, Any]]:
        p, net = self.p, self.place.sybil_net
        self.say(f"eclipse: {p.sybils} Sybils on {net}.0/24 push each other")
        env = {"NETDIAG_NODE_DEBUG_KAD_ONLY_SUBNET": f"{net}.0/24"}
        sybils = [
            self._start(f"s{i:02d}", self.place.sybil(i), [boot.addr], None, env)
            for i in range(p.sybils)
        ]
        self._wait_up(sybils)
        time.sleep(min(2 * p.refresh_s, 20.0))  # Sybils and honest tables take each other in
        rows = []
        for name, host, via in (
            ("victim", self.place.victim, boot),  # bootstraps from an honest node
            ("victim_s", self.place.victim_s, sybils[0]),  # bootstraps from a Sybil
        ):
            victim = self._start(name, host, [via.addr], None, {})
            self._wait_up([victim])
            rows.append(self._victim(victim, "honest" if via is boot else "sybil"))
        return rows

    def _victim(self, victim: Proc, bootstrap: str) -> dict[str, Any]:
        p = self.p
        deadline = time.monotonic() + max(60.0, 2 * p.refresh_s)
        while time.monotonic() < deadline:
            out = [x for x in victim.api.peers() if x.get("direction") == "outbound"]
            if len(out) >= TARGET_OUTBOUND:
                break
            time.sleep(1.0)
        time.sleep(min(p.refresh_s, 30.0))  # more Sybil answers keep arriving
        peers = victim.api.peers()
        table = victim.api.get_json("/peers/table")
        outbound = [x for x in peers if x.get("direction") == "outbound"]

        def is_sybil(addr: object) -> bool:
            return isinstance(addr, str) and addr.startswith(self.place.sybil_net + ".")

        return {
            "bootstrap": bootstrap,
            "sybils": p.sybils,
            "victim_outbound": len(outbound),
            "sybil_outbound": sum(is_sybil(x.get("address")) for x in outbound),
            "sybil_inbound": sum(
                is_sybil(x.get("address")) for x in peers if x.get("direction") == "inbound"
            ),
            "victim_table": table["size"],
            "sybil_table": sum(is_sybil(e["address"]) for e in table["entries"]),
            "goal_sybil_outbound_max": SYBIL_GOAL,
        }

    def _result(
        self,
        honest: list[Proc],
        form: Formation,
        lookups: list[dict[str, Any]],
        per_min: dict[str, dict[str, float]],
        final: dict[str, dict[str, Any]],
        sybil: list[dict[str, Any]] | None,
    ) -> ResultBuilder:
        p, place = self.p, self.place
        n = p.nodes
        rb = output.new(
            "discovery",
            {
                "nodes": n,
                "duration_s": p.duration_s,
                "sybils": p.sybils,
                "refresh_s": p.refresh_s,
                "timeout_s": p.timeout_s,
                "tls": p.tls,
                "k": K,
                "target_outbound": TARGET_OUTBOUND,
                "where": place.kind,
                "profile": p.profile if place.kind == "lab" else None,
            },
            seed=p.seed,
            link_engine=place.engine,
            host_load=[*self.load, [round(x, 2) for x in os.getloadavg()]],
            host_cpus=os.cpu_count(),
            **place.metadata(),
        )
        for metric, t, v, node in self.series:
            rb.sample(f"{metric} {node}", t, v, metric=metric, node=node)
        host_of = {proc.name: proc.host for proc in honest}
        rows = figures.lookup_rows(lookups, host_of, place.rtt_s)
        for row in rows:
            rb.record("lookups", row)
        for name, s in final.items():
            b = figures.bytes_per_min(per_min[name]) if name in per_min else None
            rb.record(
                "nodes",
                {
                    "node": name,
                    "address": host_of[name],
                    "table_entries": s["table"]["size"],
                    "peers": len(s["peers"]),
                    "outbound": sum(x.get("direction") == "outbound" for x in s["peers"]),
                    "kad_bytes_per_min": None if b is None else round(b["total"], 1),
                    "frames_per_min": None if b is None else round(b["frames"], 1),
                    "probe_payload_per_min": None if b is None else round(b["probe_payload"], 1),
                },
            )
        formed_bytes = [figures.bytes_per_min(v)["total"] for v in self.formation_bytes.values()]
        rb.add_summary(
            "formation",
            {
                "nodes": n,
                "where": place.kind,
                "all_up_s": figures.r3(self.up_s),
                "table_needed": min(K, n - 1),
                "tables_s": figures.r3(form.tables_s),
                "connected_s": figures.r3(form.connected_s),
                "peers_needed": min(TARGET_OUTBOUND, n - 1),
                "peers_s": figures.r3(form.mesh_s),
                # until the end of formation: frames, probe payload and header estimate
                "bytes_per_node_mean": round(statistics.mean(formed_bytes))
                if formed_bytes
                else None,
            },
        )
        rtts = figures.path_rtt_summary(place.honest[:n], place.rtt_s)
        rb.add_summary("lookups", {**figures.lookup_summary(rows, n), **rtts})
        own = [r for r in rows if r["purpose"] == "self"]
        if own:
            rb.add_summary("lookups", {**figures.lookup_summary(own, n, "self"), **rtts})
        rb.add_summary("traffic", figures.traffic_summary(per_min, p.duration_s))
        rb.add_summary("rpcs", figures.rpc_summary("formation", self.formation_bytes))
        minutes = p.duration_s / 60
        window = {n: {k: v * minutes for k, v in d.items()} for n, d in per_min.items()}
        rb.add_summary("rpcs", figures.rpc_summary("window", window))
        for row in sybil or []:
            rb.add_summary("eclipse", row)
        return rb


def tail(log: Path, n: int = 2) -> str:
    try:
        return " | ".join(log.read_text(errors="replace").splitlines()[-n:])[-400:]
    except OSError:
        return "(no log)"


def lab_missing() -> str | None:
    """Why a lab cannot be built here (None: it can)."""
    if os.geteuid() != 0:
        return "not root"
    from netdiag.kernel import caps

    absent = [c for c in ("CAP_SYS_ADMIN", "CAP_NET_ADMIN") if not caps.has(c)]
    if absent:
        return f"missing {', '.join(absent)}"
    if not os.path.exists("/proc/self/ns/net"):
        return "no network namespaces"
    return None


@contextlib.contextmanager
def placement(p: Params, say: Callable[[str], None]) -> Iterator[Placement]:
    where = p.where
    if where == "auto":
        why = lab_missing()
        where = "loopback" if why else "lab"
        if why:
            say(f"no lab ({why}): nodes on loopback, no link delays")
    if where == "loopback":
        yield discovery_place.loopback(p.nodes)
        return
    name = f"kd{p.seed % 1000}{os.getpid() % 10000}"[:16]
    say(f"building lab {name}: {p.nodes} nodes + Sybil and victim namespaces")
    with discovery_place.lab(p.nodes, p.sybils, p.seed, p.profile, p.engine, name) as place:
        yield place


def run(p: Params, say: Callable[[str], None]) -> ResultBuilder:
    with placement(p, say) as place:
        bench = DiscoveryBench(p, place, say)
        done = False
        try:
            rb = bench.run()
            done = True
            return rb
        finally:
            bench.stop()
            if done and not os.environ.get("NETDIAG_KEEP_WORK"):
                import shutil

                shutil.rmtree(bench.work, ignore_errors=True)
            elif not done:
                say(f"work directory kept for the nodes' logs: {bench.work}")
