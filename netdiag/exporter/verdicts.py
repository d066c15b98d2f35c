"""The verdict engine inside the exporter: a thread runs `netdiag diagnose` (collect a window,
judge every connection, listener and the host) every `verdict_interval_s`, and keeps only the
latest report — memory does not grow with the number of runs or connections seen.

Metrics have bounded labels: verdict x severity x scope, all from fixed vocabularies.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from netdiag.diagnose import SEVERITY_RANK, VERDICTS
from netdiag.diagnose.collect import Selection
from netdiag.diagnose.run import Report, run
from netdiag.errors import NetdiagError
from netdiag.exporter.config import ExporterConfig

MAX_FINDINGS = 500  # /verdicts lists at most this many (most severe first); counts cover all
SCOPES = ("connection", "listener", "host", "node")

Runner = Callable[[Selection, float, int | None, str | None], Report]


def _run(sel: Selection, window_s: float, rate_bps: int | None, node: str | None) -> Report:
    return run(sel, window_s, rate_bps=rate_bps, node_url=node)


def selection(cfg: ExporterConfig) -> Selection:
    return Selection(
        ports=cfg.ports,
        pids=cfg.pids,
        cgroup=Path(cfg.cgroup) if cfg.cgroup else None,
        netns=cfg.netns,
    )


class VerdictWorker:
    """Runs the engine in a thread; `latest()` and `collect()` are safe from any thread."""

    def __init__(
        self,
        cfg: ExporterConfig,
        runner: Runner = _run,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._cfg = cfg
        self._runner = runner
        self._clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._doc: dict[str, Any] | None = None
        self._counts: Counter[tuple[str, str, str]] = Counter()
        self._runs = 0
        self._errors = 0
        self._last_error: str | None = None
        self._last_end = 0.0
        self._last_duration = 0.0

    def configure(self, cfg: ExporterConfig) -> None:
        """New settings (SIGHUP): the next run uses them, and starts now."""
        with self._lock:
            self._cfg = cfg
        self._wake.set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="netdiag-verdicts", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def run_once(self) -> None:
        with self._lock:
            cfg = self._cfg
        rate = None
        if cfg.rate:
            from netdiag.tune.buffers import parse_rate_bps

            rate = parse_rate_bps(cfg.rate)
        t0 = time.monotonic()
        try:
            report = self._runner(selection(cfg), cfg.verdict_window_s, rate, cfg.node)
        except NetdiagError as e:  # a node that is down, a namespace gone: say so, keep going
            with self._lock:
                self._errors += 1
                self._last_error = str(e)
            return
        findings = report.findings
        counts: Counter[tuple[str, str, str]] = Counter(
            (f.verdict, f.severity, f.scope) for f in findings
        )
        doc = report.to_json()
        doc["findings"] = doc["findings"][:MAX_FINDINGS]
        doc["findings_total"] = len(findings)
        doc["truncated"] = len(findings) > MAX_FINDINGS
        doc["counts"] = {v: n for v, n in Counter(f.verdict for f in findings).most_common() if n}
        with self._lock:
            self._runs += 1
            self._last_end = self._clock()
            self._last_duration = time.monotonic() - t0
            doc["time"] = self._last_end
            self._doc = doc
            self._counts = counts
            self._last_error = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.run_once()
            with self._lock:
                wait = max(0.0, self._cfg.verdict_interval_s - self._cfg.verdict_window_s)
            self._wake.wait(wait)
            self._wake.clear()

    def latest(self) -> dict[str, Any]:
        with self._lock:
            return {
                "runs": self._runs,
                "errors": self._errors,
                "last_error": self._last_error,
                "report": self._doc,
            }

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        with self._lock:
            counts = dict(self._counts)
            runs, errors = self._runs, self._errors
            last_end, duration = self._last_end, self._last_duration
        g = GaugeMetricFamily(
            "netdiag_verdict_findings",
            "Findings of the latest verdict run (netdiag diagnose) by verdict, severity and "
            "scope: connections, listeners and host facts judged over verdict_window_s",
            labels=["verdict", "severity", "scope"],
        )
        for v in VERDICTS:
            for sev in SEVERITY_RANK:
                for scope in SCOPES:
                    n = counts.get((v, sev, scope), 0)
                    if n:
                        g.add_metric([v, sev, scope], float(n))
        yield g
        c = CounterMetricFamily("netdiag_verdict_runs", "Verdict runs completed")
        c.add_metric([], float(runs))
        yield c
        e = CounterMetricFamily(
            "netdiag_verdict_errors", "Verdict runs that failed (the reason is in /verdicts)"
        )
        e.add_metric([], float(errors))
        yield e
        if runs:
            t = GaugeMetricFamily(
                "netdiag_verdict_last_run_timestamp_seconds", "Unix time the last run ended"
            )
            t.add_metric([], last_end)
            yield t
            d = GaugeMetricFamily(
                "netdiag_verdict_last_run_duration_seconds", "Wall time of the last run"
            )
            d.add_metric([], duration)
            yield d
