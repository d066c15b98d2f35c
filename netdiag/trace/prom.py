"""Prometheus exposition of trace-peers with bounded labels.

One series per (peer address, peer id, local port) — never per socket: a node with churning
connections would otherwise create series without end. `local_port` is the port of a local
listener (inbound connections) or `ephemeral` (outbound: the local port is random and would
make one series per connection again). At most `max_series` label sets are admitted, first
come first kept; everything beyond goes to one `other` series, so the cardinality is bounded
by max_series + 1 whatever the traffic.

Counters stay monotonic when sockets close: each socket's increase since the previous read is
added to its series' running total (a sum over live sockets would fall when one closes).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from netdiag.errors import InputError
from netdiag.trace.decode import Row
from netdiag.trace.pipeline import Frame

LABELS = ("peer", "peer_id", "local_port")
OTHER = ("other", "", "other")
DEFAULT_MAX_SERIES = 256

COUNTERS = {
    "bytes_acked": (
        "netdiag_tcp_acked_bytes",
        "Bytes the peer acknowledged: sum of snd_una advances seen by tcp:tcp_probe on the "
        "connections of this label set (acks arriving outside ESTABLISHED are not seen)",
    ),
    "retrans": (
        "netdiag_tcp_retransmitted_skbs",
        "Retransmitted skbs: tcp:tcp_retransmit_skb events on the connections of this label "
        "set. One skb can carry several segments under TSO/GSO; nstat TcpRetransSegs counts "
        "segments",
    ),
}
GAUGES = {
    "connections": (
        "netdiag_tcp_connections",
        "TCP connections (not LISTEN) of this label set in the last interval",
    ),
    "srtt_max": (
        "netdiag_tcp_srtt_max_microseconds",
        "Largest smoothed RTT (tp->srtt_us >> 3 at the last tcp:tcp_probe, or tcpi_rtt) among "
        "the connections of this label set",
    ),
    "min_rtt_min": (
        "netdiag_tcp_min_rtt_microseconds",
        "Smallest kernel minimum RTT (tcpi_min_rtt via sock_diag) among the connections of "
        "this label set",
    ),
    "cwnd_max": (
        "netdiag_tcp_cwnd_max_segments",
        "Largest congestion window (segments) among the connections of this label set",
    ),
    "acked_bps": (
        "netdiag_tcp_acked_bits_per_second",
        "Acknowledged bits per second over the last interval, summed over the connections of "
        "this label set",
    ),
}


def label_set(row: Row, listen_ports: set[int]) -> tuple[str, str, str]:
    lport = row.get("lport")
    port = str(lport) if lport in listen_ports else "ephemeral"
    return (str(row.get("raddr") or ""), str(row.get("peer_id") or ""), port)


@dataclass
class Series:
    totals: dict[str, float] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0.0))
    gauges: dict[str, float] = field(default_factory=dict)


class PromCollector:
    """A prometheus_client collector exposing the latest frame with bounded labels."""

    def __init__(self, max_series: int = DEFAULT_MAX_SERIES) -> None:
        if max_series < 1:
            raise InputError(f"--prom-max-series {max_series} must be >= 1", "e.g. 256")
        self.max_series = max_series
        self._lock = threading.Lock()
        self._series: dict[tuple[str, str, str], Series] = {}
        self._prev: dict[int, dict[str, float]] = {}  # cookie -> counters at the last read
        self._events_per_s = 0.0
        self._lost_total = 0.0

    def key_for(self, labels: tuple[str, str, str]) -> tuple[str, str, str]:
        if labels in self._series:
            return labels
        if len(self._series) - (OTHER in self._series) < self.max_series:
            return labels
        return OTHER

    def update(self, frame: Frame) -> None:
        rows = [r for r in frame.snap.rows if r.get("state") != "LISTEN"]
        listen = {c.lport for c in frame.conns or [] if c.state == "LISTEN"}
        listen |= {int(r["lport"]) for r in frame.snap.rows if r.get("state") == "LISTEN"}
        with self._lock:
            for s in self._series.values():
                s.gauges = {}
            seen: dict[int, dict[str, float]] = {}
            for r in rows:
                key = self.key_for(label_set(r, listen))
                s = self._series.setdefault(key, Series())
                cookie = int(r.get("sock_cookie") or 0)
                before = self._prev.get(cookie, {})
                now = {k: float(r.get(k) or 0) for k in COUNTERS}
                for k, v in now.items():
                    old = before.get(k, 0.0)
                    s.totals[k] += v - old if v >= old else v
                seen[cookie] = now
                _fold(s.gauges, r)
            self._prev = seen
            self._events_per_s = frame.snap.events_per_s
            self._lost_total += frame.snap.lost

    def series_count(self) -> int:
        with self._lock:
            return len(self._series)

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        with self._lock:
            series = {k: (dict(s.totals), dict(s.gauges)) for k, s in self._series.items()}
            eps, lost = self._events_per_s, self._lost_total
        for col, (name, doc) in COUNTERS.items():
            c = CounterMetricFamily(name, doc, labels=LABELS)
            for key, (totals, _g) in series.items():
                c.add_metric(list(key), totals[col])
            yield c
        for col, (name, doc) in GAUGES.items():
            g = GaugeMetricFamily(name, doc, labels=LABELS)
            for key, (_t, gauges) in series.items():
                if col in gauges:
                    g.add_metric(list(key), gauges[col])
            yield g
        ev = GaugeMetricFamily(
            "netdiag_probe_events_per_second",
            "tcp:tcp_probe events per second the kernel half aggregated in the last interval",
        )
        ev.add_metric([], eps)
        yield ev
        lc = CounterMetricFamily(
            "netdiag_probe_lost_events",
            "Events the kernel half could not aggregate (map full, or the kernel skipped the "
            "program: recursion misses)",
        )
        lc.add_metric([], lost)
        yield lc


def _fold(g: dict[str, float], r: Row) -> None:
    g["connections"] = g.get("connections", 0.0) + 1
    for col, name, pick in (
        ("srtt_us", "srtt_max", max),
        ("min_rtt_us", "min_rtt_min", min),
        ("snd_cwnd", "cwnd_max", max),
    ):
        v = r.get(col)
        if v is not None:
            g[name] = float(pick(g[name], v)) if name in g else float(v)
    if r.get("acked_bps") is not None:
        g["acked_bps"] = g.get("acked_bps", 0.0) + float(r["acked_bps"])


class PromSink:
    def __init__(self, collector: PromCollector) -> None:
        self.collector = collector

    def emit(self, frame: Frame) -> None:
        self.collector.update(frame)


def serve(addr: str, collector: PromCollector) -> Any:
    """Start the exposition server on HOST:PORT; returns the server (shutdown() on exit)."""
    from prometheus_client import CollectorRegistry, start_http_server

    host, _, port = addr.rpartition(":")
    if not port.isdigit() or int(port) > 65535:
        raise InputError(
            f"--prometheus {addr!r} is not HOST:PORT", "e.g. --prometheus 127.0.0.1:9464"
        )
    reg = CollectorRegistry()
    reg.register(collector)
    try:
        server, _thread = start_http_server(int(port), addr=host or "127.0.0.1", registry=reg)
    except OSError as e:
        raise InputError(
            f"--prometheus {addr}: cannot listen ({e.strerror or e})",
            "choose a free port, or an address of this host",
        ) from e
    return server


def names() -> Iterable[str]:
    return [n for n, _ in COUNTERS.values()] + [n for n, _ in GAUGES.values()]
