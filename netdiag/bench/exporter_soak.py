"""`netdiag bench exporter-soak`: does the exporter's memory stay flat under connection churn?

A loopback server and client threads open and close connections at a steady rate (each
exchanges a few bytes; the server closes first, so TIME_WAIT stays on its side), from
`peers` distinct 127.0.0.x source addresses so the per-peer series are exercised. A
`netdiag exporter` child, filtered to the server's port, watches it all. Every few seconds
the bench reads the child's RSS from /proc and scrapes /metrics (lost events, series). The
figure is the RSS at the end against the RSS after the first minute (warm-up: bcc's
compiler, imports and caches are loaded by then); the target is within 10 %.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from netdiag.bench.exporter_process import ExporterProcess
from netdiag.errors import InputError
from netdiag.report.results import ResultBuilder

Progress = Callable[[str], None]
WARMUP_S = 60.0


@dataclass
class ChurnStats:
    opened: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


class Churn:
    """Connections opened and closed at `rate` per second against a loopback server."""

    def __init__(self, rate: float, peers: int, threads: int = 4) -> None:
        self.rate, self.peers, self.threads = rate, peers, threads
        self.stats = ChurnStats()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.server = socket.create_server(("127.0.0.1", 0), backlog=1024)
        self.server.settimeout(0.5)
        self.port = int(self.server.getsockname()[1])
        self._workers: list[threading.Thread] = []

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn, contextlib.suppress(OSError):
                conn.settimeout(2.0)
                data = conn.recv(256)
                conn.sendall(data or b"x")

    def _client(self, index: int) -> None:
        per_thread = self.rate / self.threads
        next_t = time.monotonic()
        n = index
        while not self._stop.is_set():
            src = f"127.0.0.{2 + n % self.peers}"
            n += self.threads
            try:
                with socket.create_connection(
                    (("127.0.0.1", self.port)), timeout=2.0, source_address=(src, 0)
                ) as c:
                    c.sendall(b"netdiag-soak " * 4)
                    while c.recv(256):
                        pass
                with self._lock:
                    self.stats.opened += 1
            except OSError as e:
                with self._lock:
                    self.stats.failed += 1
                    if len(self.stats.errors) < 5:
                        self.stats.errors.append(str(e))
            next_t += 1.0 / per_thread
            delay = next_t - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            elif delay < -1.0:  # fell behind: do not burst to catch up
                next_t = time.monotonic()

    def start(self) -> None:
        self._workers = [threading.Thread(target=self._serve, daemon=True)]
        self._workers += [
            threading.Thread(target=self._client, args=(i,), daemon=True)
            for i in range(self.threads)
        ]
        for t in self._workers:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._workers:
            t.join(5)
        self.server.close()


def _one(m: dict[str, list[tuple[dict[str, str], float]]], name: str) -> float | None:
    vals = m.get(name)
    return vals[0][1] if vals else None


def soak(
    duration_s: float,
    rate: float,
    peers: int,
    interval_s: float,
    sample_s: float,
    no_bpf: bool,
    max_series: int,
    progress: Progress,
    verdicts: bool = True,
) -> dict[str, Any]:
    if duration_s <= 0 or rate <= 0 or sample_s <= 0 or interval_s <= 0:
        raise InputError("--duration, --rate, --sample and --interval must be > 0", "e.g. 600")
    if not 1 <= peers <= 250:
        raise InputError(f"--peers {peers} must be 1-250", "one 127.0.0.x address each")
    rb = ResultBuilder(
        "exporter-soak",
        {
            "duration_s": duration_s,
            "rate_per_s": rate,
            "peers": peers,
            "interval_s": interval_s,
            "sample_s": sample_s,
            "no_bpf": no_bpf,
            "max_series": max_series,
            "warmup_s": WARMUP_S,
            "verdicts": verdicts,
        },
    )
    churn = Churn(rate, peers)
    args = [
        "--listen",
        "127.0.0.1:0",
        "--interval",
        str(interval_s),
        "--port",
        str(churn.port),
        "--max-series",
        str(max_series),
        "--verdict-window",
        "2",
        "--verdict-interval",
        "10",
    ]
    if no_bpf:
        args.append("--no-bpf")
    if not verdicts:
        args.append("--no-verdicts")
    ex = ExporterProcess(args)
    rows: list[dict[str, Any]] = []
    exit_code: int | None = None
    try:
        health = ex.wait_until(lambda d: d.get("frames", 0) >= 1, 60, "the first frame")
        source = str(health.get("source"))
        progress(f"exporter pid {ex.pid} on {ex.address} (source {source}); churn on :{churn.port}")
        churn.start()
        t0 = time.monotonic()
        cpu0 = ex.cpu_s() or 0.0
        next_sample = t0
        while (now := time.monotonic()) - t0 < duration_s:
            if now >= next_sample:
                m = ex.metrics()
                t = round(now - t0, 3)
                row = {
                    "t_s": t,
                    "rss_bytes": ex.rss_bytes(),
                    "connections_opened": churn.stats.opened,
                    "lost_events_total": _one(m, "netdiag_probe_lost_events_total"),
                    "series": _one(m, "netdiag_exporter_series"),
                    "events_per_s": _one(m, "netdiag_probe_events_per_second"),
                    "frames_total": _one(m, "netdiag_exporter_frames_total"),
                    "frame_errors_total": _one(m, "netdiag_exporter_frame_errors_total"),
                    **{
                        f"kernel_{labels['stat']}": v
                        for labels, v in m.get("netdiag_probe_kernel_events_total", [])
                        if labels.get("stat") in ("lost_events", "recursion_misses")
                    },
                }
                rows.append(row)
                rb.record("samples", row)
                rss = row["rss_bytes"]
                rb.sample("rss_mb", t, rss / 1e6 if rss else None, metric="rss", unit="MB")
                rb.sample("series", t, row["series"], metric="series")
                rb.sample("lost_events_total", t, row["lost_events_total"], metric="lost")
                rb.sample("events_per_s", t, row["events_per_s"], metric="events")
                if len(rows) % max(1, int(60 / sample_s)) == 1:
                    progress(
                        f"t={t:.0f}s rss={rss / 1e6 if rss else float('nan'):.1f} MB "
                        f"opened={churn.stats.opened} series={row['series']} "
                        f"lost={row['lost_events_total']}"
                    )
                next_sample += sample_s
            time.sleep(min(0.2, max(0.0, next_sample - time.monotonic())))
        elapsed = time.monotonic() - t0
        cpu_s = (ex.cpu_s() or cpu0) - cpu0
        verdict_doc = ex.json("/verdicts")
    finally:
        churn.stop()
        try:
            exit_code = ex.stop()
        finally:
            ex.kill()
    base = next((r for r in rows if r["t_s"] >= min(WARMUP_S, duration_s / 2)), None)
    end = rows[-1] if rows else None
    rss_base = base["rss_bytes"] if base else None
    rss_end = end["rss_bytes"] if end else None
    growth = round((rss_end - rss_base) / rss_base * 100, 2) if rss_base and rss_end else None
    lost_base = base["lost_events_total"] if base else None
    lost_end = end["lost_events_total"] if end else None
    summary = {
        "source": source,
        "duration_s": round(elapsed, 1),
        "connections_opened": churn.stats.opened,
        "connections_failed": churn.stats.failed,
        "conn_per_s": round(churn.stats.opened / elapsed, 1) if elapsed else None,
        "rss_base_t_s": base["t_s"] if base else None,
        "rss_base_mb": round(rss_base / 1e6, 2) if rss_base else None,
        "rss_end_mb": round(rss_end / 1e6, 2) if rss_end else None,
        "rss_growth_pct": growth,
        "rss_max_mb": round(max(r["rss_bytes"] or 0 for r in rows) / 1e6, 2) if rows else None,
        "series_max": max((r["series"] or 0 for r in rows), default=None),
        "lost_events_total": lost_end,
        "lost_events_after_base": (
            lost_end - lost_base if lost_end is not None and lost_base is not None else None
        ),
        "lost_map_full": end.get("kernel_lost_events") if end else None,
        "lost_recursion_misses": end.get("kernel_recursion_misses") if end else None,
        "frame_errors_total": end["frame_errors_total"] if end else None,
        "exporter_cpu_pct": round(cpu_s / elapsed * 100, 1) if elapsed else None,
        "verdict_runs": verdict_doc.get("runs"),
        "exit_code_on_sigterm": exit_code,
    }
    rb.add_summary("soak", summary)
    for e in churn.stats.errors:
        rb.record("churn_errors", {"error": e})
    return rb.to_dict()
