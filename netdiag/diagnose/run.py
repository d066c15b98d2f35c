"""The whole diagnosis: collect a window, judge every connection and listener, add host (and
node) findings, sort by severity. Used by `netdiag diagnose`, `bdp` and `bench diagnose`."""

from __future__ import annotations

import resource
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netdiag.diagnose import bottleneck, events, host, verdict, window
from netdiag.diagnose.collect import Collected, Selection, collect
from netdiag.diagnose.events import EventEvidence
from netdiag.diagnose.model import Finding, sort_key
from netdiag.errors import InputError, NetdiagError
from netdiag.kernel import netns, sysctl
from netdiag.measure.sockdiag import TcpConn
from netdiag.nodeapi import NodeApi, NodeUnavailable, Peer, peers_by_sock_cookie

RTAX_LOCK = 1
RTAX_CWND = 7


@dataclass
class Report:
    findings: list[Finding]
    host: host.HostFacts
    window_s: float
    connections: int
    listeners: int
    netns: str | None = None
    node: dict[str, Any] | None = None
    windows: list[window.ConnWindow] = field(default_factory=list)
    events: EventEvidence = field(default_factory=lambda: events.unavailable("not captured"))

    def to_json(self) -> dict[str, Any]:
        return {
            "window_s": round(self.window_s, 3),
            "netns": self.netns,
            "connections": self.connections,
            "listeners": self.listeners,
            "worst_severity": max(
                (f.severity for f in self.findings),
                key=lambda s: {"info": 0, "warn": 1, "error": 2}[s],
                default=None,
            ),
            "findings": [f.to_json() for f in self.findings],
            "host": self.host.to_json(),
            "node": self.node,
            "events": self.events.to_json(),
        }


def _int_sysctl(name: str, ns: str | None, last: bool = False) -> int | None:
    try:
        text = sysctl.read(name, ns)
        return int(text.split()[-1] if last else text.split()[0])
    except (NetdiagError, ValueError, IndexError, OSError):
        return None


def _str_sysctl(name: str, ns: str | None) -> str | None:
    try:
        return sysctl.read(name, ns).strip()
    except (NetdiagError, OSError):
        return None


def nofile_of(pid: int) -> tuple[int, int] | None:
    """(open fds, soft RLIMIT_NOFILE) of a process."""
    try:
        open_fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
        soft, _hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return None
    return open_fds, int(soft)


def route_cwnd_locks(addrs: list[str], ns: str | None) -> dict[str, int]:
    """Peers whose route locks cwnd (`ip route … cwnd lock N`): RTAX_CWND with its RTAX_LOCK bit."""
    if not addrs:
        return {}

    def body() -> dict[str, int]:
        from pyroute2 import IPRoute

        out: dict[str, int] = {}
        with IPRoute() as ipr:
            for a in addrs:
                try:
                    msgs = ipr.route("get", dst=a)
                except Exception:  # an unroutable peer only drops this hint
                    continue
                for m in msgs:
                    mx = m.get_attr("RTA_METRICS")
                    if mx is None:
                        continue
                    cwnd = mx.get_attr("RTAX_CWND")
                    lock = mx.get_attr("RTAX_LOCK") or 0
                    if cwnd and lock & (1 << RTAX_CWND):
                        out[a] = int(cwnd)
        return out

    try:
        return netns.run_in(ns, body)
    except Exception:  # route metrics are a hint, never a reason to fail the diagnosis
        return {}


def host_facts(ns: str | None, col: Collected, pids: tuple[int, ...]) -> host.HostFacts:
    nofile = {}
    for pid in pids:
        v = nofile_of(pid)
        if v is not None:
            nofile[pid] = v
    return host.HostFacts(
        cc=_str_sysctl("net.ipv4.tcp_congestion_control", ns),
        rmem_max=_int_sysctl("net.ipv4.tcp_rmem", ns, last=True),
        wmem_max=_int_sysctl("net.ipv4.tcp_wmem", ns, last=True),
        somaxconn=_int_sysctl("net.core.somaxconn", ns),
        default_qdisc=_str_sysctl("net.core.default_qdisc", ns),
        listen_overflows=col.counter_delta("TcpExt.ListenOverflows"),
        listen_drops=col.counter_delta("TcpExt.ListenDrops"),
        nofile=nofile,
    )


def judge_collected(
    col: Collected,
    facts: host.HostFacts,
    *,
    rate_bps: int | None = None,
    route_locks: dict[str, int] | None = None,
) -> tuple[list[Finding], list[window.ConnWindow]]:
    """Pure: samples + facts -> sorted findings (and the windows they were judged on)."""
    wins = [window.build(s) for s in col.conns.values() if s]
    listen_ports = frozenset(s[-1].conn.lport for s in col.listeners.values() if s)
    ctx = verdict.Context(
        rate_bps=rate_bps,
        peer_rates=bottleneck.per_host(wins),
        rmem_max=facts.rmem_max,
        wmem_max=facts.wmem_max,
        route_cwnd_lock=route_locks or {},
        listen_ports=listen_ports,
    )
    conn_findings = [verdict.judge(w, ctx) for w in wins]
    listener_findings = host.judge_listeners(col.listeners, facts)
    findings = conn_findings + listener_findings
    findings += host.judge_host(facts, conn_findings, listener_findings)
    findings.sort(key=sort_key)
    return findings, wins


def _node_client(url: str, ns: str | None, timeout_s: float = 2.0) -> NodeApi:
    if not url.startswith(("http://", "https://")):
        raise InputError(
            f"--node {url!r} is not an http(s) URL", "e.g. --node http://127.0.0.1:8080"
        )
    try:
        return NodeApi.at(url, ns, timeout_s)
    except ValueError as e:
        raise InputError(f"--node {e}", "e.g. --node http://127.0.0.1:7601") from None


def node_view(url: str, ns: str | None) -> tuple[dict[str, Any], dict[int, Peer]]:
    """The node's /status (sync distance, pid, port) and its peers keyed by socket cookie."""
    with _node_client(url, ns) as api:
        try:
            status = api.status()
            by_cookie = peers_by_sock_cookie(api.peers())
        except NodeUnavailable as e:
            raise NetdiagError(
                f"cannot fetch {api.url}: {e}", "is the node running? check --node URL"
            ) from e
    mesh = sum(1 for p in by_cookie.values() if p.get("mesh"))
    view = {
        "node_id": status.get("node_id"),
        "height": status.get("height"),
        "sync_distance": status.get("sync_distance"),
        "synchronized": status.get("synchronized"),
        "peers": len(by_cookie),
        "mesh_degree": mesh,
        "pid": status.get("pid"),
        "p2p_port": status.get("p2p_port"),
    }
    return view, by_cookie


def run(
    sel: Selection,
    window_s: float,
    *,
    rate_bps: int | None = None,
    node_url: str | None = None,
    progress: Callable[[float], None] | None = None,
    on_sample: Callable[[float, TcpConn], None] | None = None,
    use_bpf: bool = False,
) -> Report:
    if window_s <= 0:
        raise InputError(f"--window {window_s:g} must be > 0 seconds", "e.g. --window 3")
    if rate_bps is not None and rate_bps <= 0:
        raise InputError("--rate must be > 0", "e.g. --rate 50mbit")
    sel.validate()
    node: dict[str, Any] | None = None
    peers: dict[int, Peer] = {}
    pids = sel.pids
    if node_url:
        node, peers = node_view(node_url, sel.netns)
        if isinstance(node.get("pid"), int) and node["pid"] not in pids:
            pids = (*pids, node["pid"])
    with events.capture(use_bpf, sel.ports) as cap:
        col = collect(sel, window_s, progress=progress, on_sample=on_sample)
        ev = cap.read() if cap is not None else events.unavailable("not requested (--no-bpf)")
    facts = host_facts(sel.netns, col, pids)
    addrs = sorted({s[-1].conn.raddr for s in col.conns.values() if s})
    findings, wins = judge_collected(
        col, facts, rate_bps=rate_bps, route_locks=route_cwnd_locks(addrs, sel.netns)
    )
    findings = events.apply(findings, wins, ev, col.window_s, len(col.listeners))
    findings.sort(key=sort_key)
    if peers:
        for f in findings:
            p = peers.get(f.sock_cookie or -1)
            if p is not None:
                f.labels.update(
                    {
                        "peer_id": p.get("peer_id"),
                        "mesh": p.get("mesh"),
                        "direction": p.get("direction"),
                    }
                )
        if node is not None:
            findings.extend(node_findings(node))
            findings.sort(key=sort_key)
    return Report(
        findings,
        facts,
        col.window_s,
        connections=len(col.conns),
        listeners=len(col.listeners),
        netns=sel.netns,
        node=node,
        windows=wins,
        events=ev,
    )


def node_findings(node: dict[str, Any]) -> list[Finding]:
    """The node's own view: far behind its peers while its connections look healthy is worth a
    line (the limit is then above TCP: validation, sync scheduling)."""
    dist = node.get("sync_distance")
    if isinstance(dist, int) and dist > 2:
        return [
            Finding(
                "node",
                f"node {str(node.get('node_id') or '?')[:12]}",
                "app-limited",
                "warn",
                0.6,
                {
                    "sync_distance_blocks": dist,
                    "mesh_degree": node.get("mesh_degree"),
                    "peers": node.get("peers"),
                },
                f"the node is {dist} blocks behind its best peer (mesh degree "
                f"{node.get('mesh_degree')})",
                "if its connections are healthy above, the node itself (validation, sync) is "
                "the limit: see `netdiag node status` and its logs",
            )
        ]
    return []
