"""The exporter's loop: read the trace pipeline every interval into bounded Prometheus series,
serve them, run the verdict engine beside it; SIGHUP re-reads the config file, SIGTERM (or
Ctrl-C) stops gracefully — the probes detach, the HTTP server closes, exit 0 (130 on Ctrl-C).

Memory stays flat under connection churn: series are capped (`max_series` + one `other`),
per-socket state lives only as long as the socket, and the verdict worker keeps one report.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from netdiag.errors import ExitStatus, NetdiagError
from netdiag.exporter import config as config_mod
from netdiag.exporter.config import ExporterConfig
from netdiag.exporter.server import HttpServer
from netdiag.exporter.verdicts import Runner, VerdictWorker
from netdiag.trace.pipeline import Pipeline

log = logging.getLogger("netdiag.exporter")

Builder = Callable[[ExporterConfig], Pipeline]
STALE_INTERVALS = 3  # /healthz turns 503 when no frame came for this many intervals (+ grace)
STALE_GRACE_S = 10.0


def build_pipeline(cfg: ExporterConfig) -> Pipeline:
    """tcp_peers (or the sock_diag poller) with the trace-peers stages, no sinks."""
    from netdiag.trace import peers
    from netdiag.trace.filters import Filters

    flt = Filters(
        ports=cfg.ports,
        pids=cfg.pids,
        cgroup=Path(cfg.cgroup) if cfg.cgroup else None,
        netns=cfg.netns,
    )
    opts = peers.PeersOptions(
        filters=flt,
        node_url=cfg.node,
        cong=cfg.cong,
        no_bpf=cfg.no_bpf,
        interval_s=cfg.interval_s,
    )
    return peers.build(opts, lambda m: log.warning("%s", m))


class Exporter:
    def __init__(
        self,
        cfg: ExporterConfig,
        config_path: Path | None = None,
        flags: dict[str, Any] | None = None,
        build: Builder = build_pipeline,
        verdict_runner: Runner | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from prometheus_client import CollectorRegistry, ProcessCollector

        from netdiag.trace import prom

        self.cfg = cfg
        self.config_path = config_path
        self.flags = dict(flags or {})
        self.build = build
        self.clock = clock
        self.collector = prom.PromCollector(cfg.max_series)
        self.verdicts = VerdictWorker(cfg, verdict_runner) if verdict_runner else VerdictWorker(cfg)
        self.registry = CollectorRegistry()
        self.registry.register(_Switch(lambda: self.collector))
        self.registry.register(_Switch(lambda: self.verdicts if self.cfg.verdicts else None))
        self.registry.register(_Switch(lambda: self))
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes & co.
        self.pipeline: Pipeline | None = None
        self.http: HttpServer | None = None
        self.frames = 0
        self.frame_errors = 0
        self.last_frame_error: str | None = None
        self.reloads = 0
        self.reload_errors = 0
        self.last_reload_error: str | None = None
        self.source = "none"
        self.started = clock()
        self.last_frame: float | None = None
        self.probe_stats: dict[str, int] = {}
        self._wake = threading.Event()
        self._stop: int | None = None  # the exit status once a stop was asked for
        self._reload = False

    # --- endpoints ---------------------------------------------------------------------
    def metrics_text(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)

    def health(self) -> tuple[bool, dict[str, Any]]:
        now = self.clock()
        age = None if self.last_frame is None else now - self.last_frame
        limit = STALE_INTERVALS * self.cfg.interval_s + STALE_GRACE_S
        since_start = now - self.started
        ok = (age is not None and age <= limit) or (age is None and since_start <= limit)
        status = "ok" if ok else "stale"
        if self._stop is not None:
            ok, status = False, "stopping"
        return ok, {
            "status": status,
            "source": self.source,
            "frames": self.frames,
            "last_frame_age_s": None if age is None else round(age, 3),
            "stale_after_s": limit,
            "frame_errors": self.frame_errors,
            "last_frame_error": self.last_frame_error,
            "probe_stats": self.probe_stats,
            "series": self.collector.series_count(),
            "max_series": self.cfg.max_series,
            "reloads": self.reloads,
            "reload_errors": self.reload_errors,
            "last_reload_error": self.last_reload_error,
            "config": self.cfg.public(),
        }

    def verdicts_doc(self) -> dict[str, Any]:
        if not self.cfg.verdicts:
            return {"enabled": False, "report": None}
        return {"enabled": True, **self.verdicts.latest()}

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        c = CounterMetricFamily("netdiag_exporter_frames", "Probe reads completed")
        c.add_metric([], float(self.frames))
        yield c
        e = CounterMetricFamily(
            "netdiag_exporter_frame_errors", "Probe reads that failed (reason in /healthz)"
        )
        e.add_metric([], float(self.frame_errors))
        yield e
        r = CounterMetricFamily("netdiag_exporter_reloads", "Config reloads applied (SIGHUP)")
        r.add_metric([], float(self.reloads))
        yield r
        s = GaugeMetricFamily(
            "netdiag_exporter_series", "Label sets held per metric, the `other` series included"
        )
        s.add_metric([], float(self.collector.series_count()))
        yield s
        cap = GaugeMetricFamily(
            "netdiag_exporter_series_cap", "max_series: label sets admitted before `other`"
        )
        cap.add_metric([], float(self.cfg.max_series))
        yield cap
        ks = CounterMetricFamily(
            "netdiag_probe_kernel_events",
            "The probe's kernel-side counters since attach, by name (probes/tcp_peers.toml "
            "[output].stats): lost_events = peers map full; recursion_misses = the kernel "
            "skipped the program (it was already running on that CPU)",
            labels=["stat"],
        )
        for name, value in sorted(self.probe_stats.items()):
            ks.add_metric([name], float(value))
        yield ks
        up = GaugeMetricFamily(
            "netdiag_exporter_source_info",
            "Where rows come from: ebpf or sock_diag",
            labels=["source"],
        )
        up.add_metric([self.source], 1.0)
        yield up

    # --- control -----------------------------------------------------------------------
    def request_stop(self, status: int = ExitStatus.OK) -> None:
        if self._stop is None:
            self._stop = status
        self._wake.set()

    def request_reload(self) -> None:
        self._reload = True
        self._wake.set()

    def _open_pipeline(self) -> None:
        from netdiag.trace import prom

        pipe = self.build(self.cfg)
        pipe.sinks.append(prom.PromSink(self.collector))
        self.pipeline = pipe
        self.source = _source_of(pipe)

    def _close_pipeline(self) -> None:
        if self.pipeline is not None:
            pipe, self.pipeline = self.pipeline, None
            pipe.close()

    def reload(self) -> bool:
        """Re-read the config file; a bad file keeps the running settings (and says why)."""
        from netdiag.trace import prom

        self._reload = False
        try:
            new = config_mod.load(self.config_path, self.flags)
        except NetdiagError as e:
            self.reload_errors += 1
            self.last_reload_error = str(e)
            log.warning("reload refused, running settings kept: %s", e)
            return False
        if new.listen != self.cfg.listen:
            log.warning(
                "listen %s -> %s needs a restart; still on %s",
                self.cfg.listen,
                new.listen,
                self.cfg.listen,
            )
            new = config_mod.replace(new, listen=self.cfg.listen)
        old, self.cfg = self.cfg, new
        if new.max_series != old.max_series:
            self.collector = prom.PromCollector(new.max_series)  # series start afresh
        if new.filters_key() != old.filters_key() or new.max_series != old.max_series:
            self._close_pipeline()
            try:
                self._open_pipeline()
            except NetdiagError as e:  # e.g. a pid that exited: back to the old filters
                self.reload_errors += 1
                self.last_reload_error = str(e)
                log.warning("reload refused, running settings kept: %s", e)
                self.cfg = old
                self.collector = prom.PromCollector(old.max_series)
                self._open_pipeline()
                return False
        self.verdicts.configure(new)
        if new.verdicts and not self.verdicts.running and self.http is not None:
            self.verdicts.start()  # switched on by the reload
        elif not new.verdicts and self.verdicts.running:
            self.verdicts.stop()
        self.reloads += 1
        self.last_reload_error = None
        return True

    def step(self) -> None:
        assert self.pipeline is not None
        try:
            frame = self.pipeline.step()
        except NetdiagError as e:  # a node that went away: count it, keep serving
            self.frame_errors += 1
            self.last_frame_error = str(e)
            return
        # the kernel half's own counters (cumulative since attach): which kind of loss it was
        self.probe_stats = {k: int(v) for k, v in frame.snap.stats.items()}
        self.frames += 1
        # Decoding a sock_diag dump leaves reference cycles (pyroute2's messages: ~30 k
        # objects per read at 200 connections/s); left to the generational collector they
        # pile up until a full collection. One full collection per read keeps the heap at
        # about one read's worth, at no measurable extra CPU (A/B in docs/benchmarks.md).
        gc.collect()
        self.last_frame = self.clock()

    def run(self, ready: Callable[[str], None] | None = None) -> int:
        """Serve until a signal stops us; returns the exit status."""
        self.http = HttpServer(self.cfg.listen, self.metrics_text, self.health, self.verdicts_doc)
        old = _install_signals(self)
        try:
            self._open_pipeline()
            self.http.start()
            if self.cfg.verdicts:
                self.verdicts.start()
            if ready is not None:
                ready(self.http.address)
            next_t = self.clock() + self.cfg.interval_s
            while self._stop is None:
                self._wake.wait(max(0.0, next_t - self.clock()))
                self._wake.clear()
                if self._stop is not None:
                    break
                if self._reload:
                    self.reload()
                    continue
                if self.clock() >= next_t:
                    self.step()
                    next_t = max(next_t + self.cfg.interval_s, self.clock())
            return self._stop
        finally:
            _restore_signals(old)
            self.verdicts.stop()
            try:
                self._close_pipeline()
            finally:
                self.http.close()


def _source_of(pipe: Pipeline) -> str:
    from netdiag.trace.engine import Session

    return "ebpf" if isinstance(pipe.source, Session) else "sock_diag"


class _Switch:
    """A registry entry that forwards to whatever collector is current (reload swaps them)."""

    def __init__(self, current: Callable[[], Any]) -> None:
        self.current = current

    def collect(self) -> Iterator[Any]:
        c = self.current()
        if c is not None:
            yield from c.collect()

    def describe(self) -> list[Any]:
        return []  # no up-front description: the registry asks collect() at scrape time


def _install_signals(ex: Exporter) -> dict[int, Any]:
    old: dict[int, Any] = {}

    def stop(sig: int, _frame: Any) -> None:
        ex.request_stop(ExitStatus.INTERRUPTED if sig == signal.SIGINT else ExitStatus.OK)

    def hup(_sig: int, _frame: Any) -> None:
        ex.request_reload()

    for sig, fn in ((signal.SIGTERM, stop), (signal.SIGINT, stop), (signal.SIGHUP, hup)):
        old[sig] = signal.signal(sig, fn)
    return old


def _restore_signals(old: dict[int, Any]) -> None:
    for sig, fn in old.items():
        signal.signal(sig, fn)
