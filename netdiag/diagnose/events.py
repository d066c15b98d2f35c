"""Tracepoint evidence for the verdict engine: resets, kernel drops with reason, congestion-state
times, captured by the tcp_resets / tcp_drops / tcp_cong probes over the diagnosis window.

Optional by design: without eBPF (or with `--no-bpf`) the engine judges from sock_diag alone and
the report says the event evidence was unavailable and why. The evidence never invents a verdict
for a connection; it adds numbers to findings and raises or lowers confidence where the events
agree or disagree with the counters. What each probe can be joined on decides how it is used:

- tcp_cong rows carry the 4-tuple: joined per connection (time in Recovery/Loss).
- tcp_resets rows carry peer address + service port: joined per peer and port.
- tcp_drops rows carry only reason/location (skb:kfree_skb has no ports): host-wide counts by
  reason, all namespaces; used as supporting evidence where the reason names the verdict.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from netdiag.diagnose.model import Finding
from netdiag.diagnose.window import ConnWindow

PROBES = ("tcp_resets", "tcp_drops", "tcp_cong")
# drop reasons (enum skb_drop_reason) that speak to a verdict
RECEIVER_REASONS = ("TCP_ZEROWINDOW", "SOCKET_RCVBUFF", "TCP_OFOMERGE", "PROTO_MEM")
LISTEN_REASONS = ("TCP_LISTEN_OVERFLOW",)
# loss-limited is supported when the connection spent at least this share of the window in
# Recovery or Loss (the tracepoint's own timing, not tcp_info's retransmit counters)
RECOVERY_SHARE = 0.05
CONF_STEP = 0.1


@dataclass
class EventEvidence:
    available: bool
    reason: str | None = None  # why not available (or which probes were missing)
    probes: tuple[str, ...] = ()
    resets: list[dict[str, Any]] = field(default_factory=list)  # tcp_resets rows
    drops: dict[str, int] = field(default_factory=dict)  # reason -> packets (host-wide)
    cong: list[dict[str, Any]] = field(default_factory=list)  # tcp_cong rows
    lost_events: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "available": self.available,
            "reason": self.reason,
            "probes": list(self.probes),
            "resets": sum(int(r.get("count") or 0) for r in self.resets),
            "drops_by_reason": dict(sorted(self.drops.items(), key=lambda kv: -kv[1])),
            "lost_events": self.lost_events,
        }


def unavailable(why: str) -> EventEvidence:
    return EventEvidence(False, why)


def _reason(name: object) -> str:
    return str(name).removeprefix("SKB_DROP_REASON_")


def drops_by_reason(rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        n = int(r.get("count") or 0)
        if n:
            k = _reason(r.get("reason"))
            out[k] = out.get(k, 0) + n
    return out


def _conn_key(laddr: str, lport: int, raddr: str, rport: int) -> tuple[str, int, str, int]:
    return (laddr, int(lport), raddr, int(rport))


def _resets_for(w: ConnWindow, rows: Sequence[dict[str, Any]]) -> tuple[int, int]:
    """(received, sent) resets with this connection's peer on this connection's service port."""
    recv = sent = 0
    for r in rows:
        if r.get("raddr") != w.raddr or r.get("port") not in (w.lport, w.rport):
            continue
        if r.get("direction") == "received":
            recv += int(r.get("count") or 0)
        elif r.get("direction") == "sent":
            sent += int(r.get("count") or 0)
    return recv, sent


def _recovery_ms(w: ConnWindow, rows: Sequence[dict[str, Any]]) -> float | None:
    key = _conn_key(w.local.rsplit(":", 1)[0], w.lport, w.raddr, w.rport)  # local = "addr:port"
    for r in rows:
        k = _conn_key(r.get("laddr", ""), r.get("lport", 0), r.get("raddr", ""), r.get("rport", 0))
        if k == key:
            t = r.get("time_ms") or {}
            return float(t.get("Recovery", 0)) + float(t.get("Loss", 0))
    return None


def _bump(f: Finding, by: float) -> Finding:
    return dataclasses.replace(f, confidence=max(0.05, min(1.0, f.confidence + by)))


def apply(
    findings: Sequence[Finding],
    windows: Sequence[ConnWindow],
    ev: EventEvidence,
    window_s: float,
    listeners: int,
) -> list[Finding]:
    """Pure: findings with the event evidence joined in. Without evidence: unchanged.
    `listeners`: how many listeners were watched (a drop count is one listener's only if 1)."""
    if not ev.available:
        return list(findings)
    by_cookie = {w.cookie: w for w in windows}
    rcv_drops = sum(ev.drops.get(r, 0) for r in RECEIVER_REASONS)
    listen_drops = sum(ev.drops.get(r, 0) for r in LISTEN_REASONS)
    out: list[Finding] = []
    for f in findings:
        w = by_cookie.get(f.sock_cookie or -1) if f.scope == "connection" else None
        if w is not None:
            recv, sent = _resets_for(w, ev.resets)
            f.evidence["peer_resets_received"] = recv
            f.evidence["peer_resets_sent"] = sent
            if "tcp_cong" in ev.probes:
                rec = _recovery_ms(w, ev.cong)
                f.evidence["recovery_loss_ms"] = round(rec, 1) if rec is not None else 0.0
                share = (rec or 0.0) / 1e3 / window_s if window_s > 0 else 0.0
                if f.verdict == "loss-limited":
                    f = _bump(f, CONF_STEP if share >= RECOVERY_SHARE else -CONF_STEP)
            if f.verdict == "receiver-slow" and rcv_drops:
                f.evidence["host_receiver_drops_pkts"] = rcv_drops
                f = _bump(f, CONF_STEP)
        elif f.scope == "listener" and f.verdict == "accept-queue-overflow":
            f.evidence["host_listen_overflow_drops_pkts"] = listen_drops
            # the drop tracepoint has no port: a count is this listener's only when it is alone
            if listeners == 1:
                f.evidence["listener_overflow_drops_pkts"] = listen_drops
            if listen_drops and f.severity == "warn":
                f = dataclasses.replace(
                    f,
                    severity="error",
                    confidence=max(f.confidence, 0.85 if listeners == 1 else 0.7),
                    summary=f"{f.summary}; the kernel dropped {listen_drops} packet(s) with "
                    "reason TCP_LISTEN_OVERFLOW",
                )
        out.append(f)
    return out


class Capture:
    """The event probes attached for the window. open() attaches what this kernel offers;
    read() gives the window's evidence; close() detaches everything."""

    def __init__(self, ports: tuple[int, ...] = ()) -> None:
        self.ports = ports
        self.sessions: list[Any] = []
        self.missing: list[str] = []

    def open(self) -> Capture:
        from netdiag.trace import engine, manifest

        for name in PROBES:
            probe = manifest.load(name)
            avail = manifest.availability(probe)
            if not avail.ok:
                self.missing.append(f"{name}: {'; '.join(avail.missing)}")
                continue
            ports = self.ports if len(self.ports) <= 2 else ()
            s = engine.Session(probe, engine.defines_for(probe, ports, False))
            try:
                s.open()
            except Exception as e:  # one probe that will not load costs only its evidence
                s.close()
                self.missing.append(f"{name}: {str(e).splitlines()[0] if str(e) else e!r}")
                continue
            self.sessions.append(s)
        return self

    def read(self) -> EventEvidence:
        if not self.sessions:
            return unavailable("; ".join(self.missing) or "no event probe attached")
        ev = EventEvidence(True)
        read: list[str] = []
        for s in self.sessions:
            try:
                snap = s.read()
            except Exception as e:  # a map that cannot be read costs only this probe's evidence
                self.missing.append(f"{s.probe.name}: read failed: {e}")
                continue
            read.append(s.probe.name)
            ev.lost_events += snap.lost
            if s.probe.name == "tcp_resets":
                ev.resets = snap.rows
            elif s.probe.name == "tcp_drops":
                ev.drops = drops_by_reason(snap.rows)
            elif s.probe.name == "tcp_cong":
                ev.cong = snap.rows
        ev.probes = tuple(read)
        ev.available = bool(read)
        ev.reason = ("missing " + "; ".join(self.missing)) if self.missing else None
        return ev

    def close(self) -> None:
        for s in self.sessions:
            with contextlib.suppress(Exception):
                s.close()
        self.sessions = []


@contextlib.contextmanager
def capture(enabled: bool, ports: tuple[int, ...] = ()) -> Iterator[Capture | None]:
    """Attach the event probes unless disabled or eBPF is unusable; None means unavailable."""
    if not enabled:
        yield None
        return
    cap = Capture(ports)
    try:
        cap.open()
    except Exception:
        cap.close()
        raise
    try:
        yield cap
    finally:
        cap.close()
