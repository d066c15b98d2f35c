"""Tracepoint event evidence joined into the verdict engine (synthetic probe rows, no root)."""

from __future__ import annotations

from typing import Any

from netdiag.diagnose import Sample
from netdiag.diagnose.collect import Collected
from netdiag.diagnose.events import EventEvidence, apply, drops_by_reason, unavailable
from netdiag.diagnose.host import HostFacts
from netdiag.diagnose.model import Finding
from netdiag.diagnose.run import Report, judge_collected

from .synth import conn, series

LOSSY = {"rate_bps": 3.4e6, "retrans_per_s": 10, "rtt_us": [40100], "min_rtt_us": 40000}


def _cong(recovery_ms: float, laddr: str = "10.0.0.1", lport: int = 41000) -> dict[str, Any]:
    t = {"Open": 100.0, "Disorder": 0.0, "CWR": 0.0, "Recovery": recovery_ms, "Loss": 0.0}
    return {"laddr": laddr, "lport": lport, "raddr": "10.0.0.2", "rport": 5201, "time_ms": t}


def _judge(col: Collected, ev: EventEvidence, window_s: float = 2.0) -> list[Finding]:
    findings, wins = judge_collected(col, HostFacts())
    return apply(findings, wins, ev, window_s, len(col.listeners))


def _conn_finding(findings: list[Finding]) -> Finding:
    return next(f for f in findings if f.scope == "connection")


def test_without_events_findings_are_unchanged() -> None:
    col = Collected(conns={7: series(**LOSSY)})  # type: ignore[arg-type]
    before, wins = judge_collected(col, HostFacts())
    snapshot = [f.to_json() for f in before]
    after = apply(before, wins, unavailable("no bpf"), 2.0, 0)
    assert [f.to_json() for f in after] == snapshot


def test_time_in_recovery_raises_loss_limited_confidence_and_none_lowers_it() -> None:
    col = Collected(conns={7: series(**LOSSY)})  # type: ignore[arg-type]
    base = _conn_finding(judge_collected(col, HostFacts())[0])
    assert base.verdict == "loss-limited"
    seen = _conn_finding(_judge(col, EventEvidence(True, probes=("tcp_cong",), cong=[_cong(400)])))
    quiet = _conn_finding(_judge(col, EventEvidence(True, probes=("tcp_cong",), cong=[_cong(0)])))
    assert seen.verdict == quiet.verdict == "loss-limited"
    assert quiet.confidence < base.confidence < seen.confidence
    assert seen.evidence["recovery_loss_ms"] == 400.0


def test_cong_rows_join_on_the_four_tuple_only() -> None:
    col = Collected(conns={7: series(**LOSSY)})  # type: ignore[arg-type]
    other = _cong(400, lport=41999)  # same peer, another connection
    f = _conn_finding(_judge(col, EventEvidence(True, probes=("tcp_cong",), cong=[other])))
    assert f.evidence["recovery_loss_ms"] == 0.0


def test_resets_are_joined_per_peer_and_service_port() -> None:
    col = Collected(conns={7: series(rate_bps=4e6)})
    rows = [
        {"direction": "received", "raddr": "10.0.0.2", "port": 5201, "count": 3},
        {"direction": "sent", "raddr": "10.0.0.2", "port": 5201, "count": 1},
        {"direction": "received", "raddr": "10.0.0.9", "port": 5201, "count": 50},
        {"direction": "received", "raddr": "10.0.0.2", "port": 22, "count": 50},
    ]
    f = _conn_finding(_judge(col, EventEvidence(True, probes=("tcp_resets",), resets=rows)))
    assert f.evidence["peer_resets_received"] == 3
    assert f.evidence["peer_resets_sent"] == 1
    assert "recovery_loss_ms" not in f.evidence  # tcp_cong did not run: no claim of zero


def test_drop_reasons_sum_per_reason_without_kernel_prefix() -> None:
    rows = [
        {"reason": "TCP_LISTEN_OVERFLOW", "count": 4},
        {"reason": "SKB_DROP_REASON_TCP_LISTEN_OVERFLOW", "count": 1},
        {"reason": "NOT_SPECIFIED", "count": 0},
    ]
    assert drops_by_reason(rows) == {"TCP_LISTEN_OVERFLOW": 5}


def _listener(depth: int, backlog: int) -> list[Sample]:
    c = conn(None, state="LISTEN", lport=5301, rport=0, rqueue=depth, wqueue=backlog)
    return [Sample(t * 0.2, c) for t in range(6)]


def test_listen_overflow_drops_decide_a_full_accept_queue() -> None:
    col = Collected(listeners={1: _listener(3, 2)})  # at its limit, ListenOverflows unchanged
    warn = next(f for f in judge_collected(col, HostFacts())[0] if f.scope == "listener")
    assert warn.severity == "warn"
    ev = EventEvidence(True, probes=("tcp_drops",), drops={"TCP_LISTEN_OVERFLOW": 6})
    f = next(f for f in _judge(col, ev) if f.scope == "listener")
    assert f.verdict == "accept-queue-overflow" and f.severity == "error"
    assert f.confidence > warn.confidence
    assert f.evidence["listener_overflow_drops_pkts"] == 6


def test_listen_overflow_drops_are_not_attributed_among_several_listeners() -> None:
    col = Collected(listeners={1: _listener(3, 2), 2: _listener(0, 128)})
    ev = EventEvidence(True, probes=("tcp_drops",), drops={"TCP_LISTEN_OVERFLOW": 6})
    f = next(f for f in _judge(col, ev) if f.scope == "listener")
    assert "listener_overflow_drops_pkts" not in f.evidence
    assert f.evidence["host_listen_overflow_drops_pkts"] == 6


def test_zero_window_drops_support_receiver_slow() -> None:
    col = Collected(conns={7: series(rate_bps=4e6, rwnd=0.7, snd_wnd=0)})
    base = _conn_finding(judge_collected(col, HostFacts())[0])
    assert base.verdict == "receiver-slow"
    ev = EventEvidence(True, probes=("tcp_drops",), drops={"TCP_ZEROWINDOW": 9})
    f = _conn_finding(_judge(col, ev))
    assert f.verdict == "receiver-slow" and f.confidence > base.confidence
    assert f.evidence["host_receiver_drops_pkts"] == 9


def test_report_json_says_whether_event_evidence_was_available() -> None:
    r = Report([], HostFacts(), 1.0, 0, 0)
    assert r.to_json()["events"]["available"] is False
    ev = EventEvidence(True, probes=("tcp_drops",), drops={"A": 1, "B": 5})
    j = Report([], HostFacts(), 1.0, 0, 0, events=ev).to_json()["events"]
    assert j["available"] is True and list(j["drops_by_reason"]) == ["B", "A"]


class _FakeSession:
    def __init__(self, name: str, rows: list[dict[str, Any]] | None) -> None:
        self.probe = type("P", (), {"name": name})()
        self.rows = rows
        self.closed = False

    def read(self) -> Any:
        if self.rows is None:
            raise OSError("map gone")
        return type("S", (), {"rows": self.rows, "lost": 2})()

    def close(self) -> None:
        self.closed = True


def test_capture_reports_only_the_probes_it_could_read() -> None:
    from netdiag.diagnose.events import Capture

    cap = Capture()
    assert cap.read().available is False  # nothing attached
    drops = _FakeSession("tcp_drops", [{"reason": "TCP_ZEROWINDOW", "count": 3}])
    cong = _FakeSession("tcp_cong", None)
    cap.sessions = [drops, cong]
    ev = cap.read()
    assert ev.available and ev.probes == ("tcp_drops",)
    assert ev.drops == {"TCP_ZEROWINDOW": 3} and ev.lost_events == 2
    assert ev.reason is not None and "tcp_cong" in ev.reason
    cap.close()
    assert drops.closed and cong.closed and cap.sessions == []
