"""Listener and host findings: accept queues, ListenOverflows, cc against the loss peers see,
buffer maxima against the largest peer BDP, the node's fd limit, somaxconn, qdisc/pacing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from netdiag.diagnose import listenq
from netdiag.diagnose.model import Finding, human_bytes
from netdiag.diagnose.window import Sample

NOFILE_WARN_SHARE = 0.8
LOSS_WARN = 0.001  # retransmitted share of bytes that a loss-based cc pays heavily for


@dataclass(frozen=True)
class HostFacts:
    cc: str | None = None
    rmem_max: int | None = None
    wmem_max: int | None = None
    somaxconn: int | None = None
    default_qdisc: str | None = None
    listen_overflows: int = 0  # TcpExt.ListenOverflows delta over the window
    listen_drops: int = 0
    nofile: dict[int, tuple[int, int]] = field(default_factory=dict)  # pid -> (open fds, soft)

    def to_json(self) -> dict[str, object]:
        return {
            "tcp_congestion_control": self.cc,
            "tcp_rmem_max_bytes": self.rmem_max,
            "tcp_wmem_max_bytes": self.wmem_max,
            "somaxconn": self.somaxconn,
            "default_qdisc": self.default_qdisc,
            "listen_overflows_delta": self.listen_overflows,
            "listen_drops_delta": self.listen_drops,
            "nofile": {str(p): {"open": o, "soft_limit": s} for p, (o, s) in self.nofile.items()},
        }


def judge_listeners(listeners: Mapping[int, Sequence[Sample]], facts: HostFacts) -> list[Finding]:
    """Every listener's accept queue over the window, with the namespace's ListenOverflows and
    ListenDrops attributed to the listener(s) that dropped (listenq explains how)."""
    att = listenq.attribute(listeners, facts.listen_overflows, facts.listen_drops)
    out = []
    for q in att.listeners:
        f = _judge_queue(q, facts)
        if f is not None:
            out.append(f)
    return out


def _judge_queue(q: listenq.ListenerQueue, facts: HostFacts) -> Finding | None:
    dropped = bool(q.drops)
    if not dropped and not q.full:
        return None
    ev: dict[str, int | float | str | bool | None] = {
        "accept_queue_max": q.depth_max,
        "backlog": q.backlog,
        "full_samples": q.full_samples,
        "samples": q.samples,
        "somaxconn": facts.somaxconn,
        "listen_overflows_delta": facts.listen_overflows,
        "listen_drops_delta": facts.listen_drops,
        "listener_drops": q.drops,
        "overflows_attributed": q.overflows,
        "attribution": q.attribution,
    }
    if q.shared_with:
        ev["shared_with_ports"] = ",".join(str(p) for p in q.shared_with)
    capped = facts.somaxconn is not None and q.backlog >= facts.somaxconn
    fix = "the application must accept() faster (or raise its listen() backlog)"
    if capped:
        fix += f"; its backlog is capped by net.core.somaxconn={facts.somaxconn}: raise it too"
    queue = f"queue {q.depth_max}/{q.backlog}"
    if dropped:
        if q.attribution == listenq.SHARED:
            whose = (
                f"ListenOverflows +{facts.listen_overflows} namespace-wide, split with "
                f"listener(s) :{', :'.join(str(p) for p in q.shared_with)} in a way the kernel "
                "does not say (ambiguous)"
            )
        elif q.overflows:
            whose = f"{q.overflows} of them overflows of its accept queue"
        else:
            whose = "none counted as overflows (ListenOverflows did not rise)"
        return Finding(
            "listener",
            q.subject,
            "accept-queue-overflow",
            "error" if q.overflows or q.attribution == listenq.SHARED else "warn",
            0.95 if q.attribution == listenq.EXACT else 0.8,
            ev,
            f"accept-queue-overflow: this listener dropped {q.drops} connection attempt(s) in "
            f"the window (its own drop counter; {whose}); {queue}",
            fix,
            sock_cookie=q.cookie,
        )
    if facts.listen_overflows > 0 and q.attribution in (listenq.BY_FILL, listenq.SHARED):
        whose = (
            "the only listener seen at its backlog"
            if q.attribution == listenq.BY_FILL
            else "ambiguous: listener(s) :"
            + ", :".join(str(p) for p in q.shared_with)
            + " were at their backlog too"
        )
        return Finding(
            "listener",
            q.subject,
            "accept-queue-overflow",
            "error",
            0.9 if q.attribution == listenq.BY_FILL else 0.6,
            ev,
            f"accept-queue-overflow: {queue} and ListenOverflows +{facts.listen_overflows} in "
            f"the window ({whose}; this kernel reports no per-listener drop counter): new "
            "connections are dropped",
            fix,
            sock_cookie=q.cookie,
        )
    return Finding(
        "listener",
        q.subject,
        "accept-queue-overflow",
        "warn",
        0.6,
        ev,
        f"accept queue at its limit ({q.depth_max}/{q.backlog}); no drop counted in the window yet",
        fix,
        sock_cookie=q.cookie,
    )


def judge_host(
    facts: HostFacts,
    conn_findings: Sequence[Finding],
    listener_findings: Sequence[Finding],
) -> list[Finding]:
    out: list[Finding] = []
    conns = [f for f in conn_findings if f.scope == "connection"]
    # ListenOverflows no watched listener accounts for: outside the selection, closed, or (no
    # per-listener counter) filled and drained between samples
    overflow_findings = [f for f in listener_findings if f.verdict == "accept-queue-overflow"]
    if any(
        f.evidence.get("attribution") in (listenq.SHARED, listenq.BY_FILL)
        for f in overflow_findings
    ):
        left = 0
    else:
        attributed = sum(
            int(v)
            for f in overflow_findings
            if isinstance(v := f.evidence.get("overflows_attributed"), int)
        )
        left = facts.listen_overflows - attributed
    if left > 0:
        out.append(
            Finding(
                "host",
                "TcpExt.ListenOverflows",
                "accept-queue-overflow",
                "error",
                0.8,
                {
                    "listen_overflows_delta": facts.listen_overflows,
                    "listen_drops_delta": facts.listen_drops,
                    "unattributed_overflows": left,
                    "somaxconn": facts.somaxconn,
                },
                f"ListenOverflows +{facts.listen_overflows} in the window, {left} of them on no "
                "watched listener: the overflowing listener is outside the selection, closed, "
                "or filled and drained between samples",
                "rerun without --port/--pid/--cgroup filters, or find it with `ss -ltnm` (its "
                "d… drop counter rises, Recv-Q at Send-Q); its application must accept() "
                "faster; raise its backlog and net.core.somaxconn",
            )
        )
    # the cc in use against the loss its peers see
    lossy = [
        f
        for f in conns
        if f.verdict == "loss-limited"
        or (
            isinstance(f.evidence.get("retrans_pct"), float)
            and float(f.evidence.get("retrans_pct") or 0) >= 100 * LOSS_WARN
            and f.evidence.get("cc") in ("cubic", "reno")
        )
    ]
    if lossy:
        ports = sorted({p for f in lossy if (p := _port_of(f)) is not None})
        worst = max(float(f.evidence.get("retrans_pct") or 0) for f in lossy)
        out.append(
            Finding(
                "host",
                "net.ipv4.tcp_congestion_control",
                "loss-limited",
                "warn",
                0.8,
                {
                    "tcp_congestion_control": facts.cc,
                    "lossy_connections": len(lossy),
                    "worst_retrans_pct": worst,
                },
                f"{len(lossy)} connection(s) on a loss-based cc see up to {worst:.2f} % "
                "retransmits",
                " ; ".join(f"netdiag tune --cc bbr --port {p}" for p in ports)
                or "netdiag tune --cc bbr --port <service port>",
            )
        )
    # buffer maxima against the largest peer BDP (2 × bottleneck × min RTT)
    need = 0
    need_src = ""
    for f in conns:
        bdp = f.evidence.get("bdp_bytes")
        if isinstance(bdp, int) and f.verdict not in ("idle", "app-limited") and 2 * bdp > need:
            need, need_src = 2 * bdp, f.subject
    for name, have, verdict in (
        ("net.ipv4.tcp_rmem", facts.rmem_max, "rwnd-limited"),
        ("net.ipv4.tcp_wmem", facts.wmem_max, "sndbuf-limited"),
    ):
        if have is not None and need > 0 and have < need:
            out.append(
                Finding(
                    "host",
                    name,
                    verdict,  # type: ignore[arg-type]
                    "warn",
                    0.7,
                    {"max_bytes": have, "needed_bytes": need, "largest_bdp_peer": need_src},
                    f"{name} max {human_bytes(have)} < 2 × the largest peer BDP "
                    f"{human_bytes(need)} ({need_src})",
                    f'netdiag tune --set {name}="4096 131072 {need}"',
                )
            )
    for pid, (open_fds, soft) in facts.nofile.items():
        if soft > 0 and open_fds >= NOFILE_WARN_SHARE * soft:
            out.append(
                Finding(
                    "host",
                    f"RLIMIT_NOFILE of pid {pid}",
                    "accept-queue-overflow",
                    "error" if open_fds >= 0.95 * soft else "warn",
                    0.8,
                    {"open_fds": open_fds, "nofile_soft_limit": soft},
                    f"pid {pid} holds {open_fds} of {soft} file descriptors: accept() fails "
                    "with EMFILE at the limit and new peers queue, then overflow",
                    f"netdiag tune --nofile {max(65536, soft * 4)} --pid {pid}",
                )
            )
    if facts.default_qdisc and facts.default_qdisc not in ("fq", "fq_codel", "cake"):
        inflated = [f for f in conns if f.verdict == "rtt-inflated"]
        if inflated:
            out.append(
                Finding(
                    "host",
                    "net.core.default_qdisc",
                    "rtt-inflated",
                    "warn",
                    0.6,
                    {"default_qdisc": facts.default_qdisc, "inflated_connections": len(inflated)},
                    f"default_qdisc {facts.default_qdisc} keeps no queue discipline against "
                    "standing queues seen on this host's connections",
                    "net.core.default_qdisc=fq_codel where the kernel has it (bbr paces in TCP "
                    "itself since 4.13; it does not need fq)",
                )
            )
    return out


def _port_of(f: Finding) -> int | None:
    p = f.evidence.get("service_port")
    return p if isinstance(p, int) else None
