"""The exporter on a fake probe source and a fake verdict engine: bounded series, /healthz
freshness, /verdicts, reload keeping or replacing settings, the HTTP endpoints."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from netdiag.diagnose import Finding
from netdiag.diagnose.collect import Selection
from netdiag.diagnose.host import HostFacts
from netdiag.diagnose.run import Report
from netdiag.errors import NetdiagError
from netdiag.exporter import config
from netdiag.exporter.daemon import Exporter
from netdiag.exporter.server import HttpServer
from netdiag.exporter.verdicts import MAX_FINDINGS, VerdictWorker
from netdiag.trace.engine import Snapshot
from netdiag.trace.pipeline import Pipeline


def _row(peer: str, cookie: int, acked: int = 1000) -> dict[str, Any]:
    return {
        "raddr": peer,
        "lport": 40000 + cookie,
        "sock_cookie": cookie,
        "state": "ESTABLISHED",
        "bytes_acked": acked,
        "retrans": 0,
        "srtt_us": 100,
    }


class FakeSource:
    def __init__(self, rows_per_read: list[list[dict[str, Any]]]) -> None:
        self.reads, self.closed = list(rows_per_read), False

    def read(self) -> Snapshot:
        rows = self.reads.pop(0) if self.reads else []
        return Snapshot("tcp_peers", 0, 1.0, [dict(r) for r in rows], {}, 0, 0.0, 0)

    def close(self) -> None:
        self.closed = True


class Builder:
    """Records every pipeline it builds (and the settings it was built from)."""

    def __init__(self, rows_per_read: list[list[dict[str, Any]]], fail_on_ports: int = 0) -> None:
        self.rows, self.built, self.fail_on_ports = rows_per_read, [], fail_on_ports
        self.sources: list[FakeSource] = []

    def __call__(self, cfg: config.ExporterConfig) -> Pipeline:
        if self.fail_on_ports and self.fail_on_ports in cfg.ports:
            raise NetdiagError("no such pid", "pick another")
        self.built.append(cfg)
        src = FakeSource(self.rows)
        self.sources.append(src)
        return Pipeline(src)


def _finding(verdict: str, sev: str, i: int) -> Finding:
    return Finding("connection", f"10.0.0.{i}:1 (local :2)", verdict, sev, 0.9, {}, "s", None)  # type: ignore[arg-type]


def fake_runner(findings: list[Finding]) -> Any:
    calls: list[tuple[Selection, float]] = []

    def run(sel: Selection, window_s: float, rate: int | None, node: str | None) -> Report:
        calls.append((sel, window_s))
        return Report(list(findings), HostFacts(cc="bbr"), window_s, len(findings), 0)

    run.calls = calls  # type: ignore[attr-defined]
    return run


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _metric_lines(ex: Exporter, name: str) -> list[str]:
    return [ln for ln in ex.metrics_text().decode().splitlines() if ln.startswith(name)]


def test_series_are_per_peer_and_capped_with_other() -> None:
    rows = [_row(f"10.0.0.{i}", i) for i in range(1, 9)]  # 8 peers, one socket each
    cfg = config.ExporterConfig(max_series=3, verdicts=False)
    ex = Exporter(cfg, build=Builder([rows, rows]))
    ex._open_pipeline()
    ex.step()
    ex.step()
    acked = _metric_lines(ex, "netdiag_tcp_acked_bytes_total")
    assert len(acked) == 4  # 3 admitted + other
    assert sum('peer="other"' in ln for ln in acked) == 1
    assert not any("sock_cookie" in ln for ln in ex.metrics_text().decode().splitlines())
    assert _metric_lines(ex, "netdiag_exporter_series ")[0].endswith(" 4.0")
    assert _metric_lines(ex, "netdiag_exporter_frames_total")[0].endswith(" 2.0")
    assert _metric_lines(ex, "process_resident_memory_bytes")


def test_series_do_not_grow_with_churn() -> None:
    """Sockets come and go (new cookies every read) between the same two peers."""
    reads = [[_row("10.0.0.1", 2 * n), _row("10.0.0.2", 2 * n + 1)] for n in range(200)]
    ex = Exporter(config.ExporterConfig(verdicts=False), build=Builder(reads))
    ex._open_pipeline()
    for _ in range(200):
        ex.step()
    assert ex.collector.series_count() == 2
    assert len(ex.collector._prev) == 2  # per-socket state only for live sockets


def test_health_turns_stale_without_frames_and_not_ok_while_stopping() -> None:
    clock = Clock()
    cfg = config.ExporterConfig(interval_s=1.0, verdicts=False)
    ex = Exporter(cfg, build=Builder([]), clock=clock)
    ex._open_pipeline()
    ok, doc = ex.health()
    assert ok and doc["status"] == "ok" and doc["frames"] == 0  # start-up grace
    ex.step()
    clock.t += 1.0
    ok, doc = ex.health()
    assert ok and doc["last_frame_age_s"] == 1.0
    clock.t += doc["stale_after_s"]
    ok, doc = ex.health()
    assert not ok and doc["status"] == "stale"
    ex.step()
    assert ex.health()[0]
    ex.request_stop()
    ok, doc = ex.health()
    assert not ok and doc["status"] == "stopping"


def test_reload_rebuilds_on_new_filters_and_keeps_settings_on_a_bad_file(tmp_path: Path) -> None:
    f = tmp_path / "exporter.toml"
    f.write_text("ports = [7600]\nverdicts = false\n")
    b = Builder([], fail_on_ports=9999)
    ex = Exporter(config.load(f, {}), config_path=f, build=b)
    ex._open_pipeline()
    f.write_text("ports = [7600]\nverdicts = false\ninterval_s = 2\n")  # no new filters
    assert ex.reload()
    assert len(b.built) == 1 and ex.cfg.interval_s == 2.0
    f.write_text("ports = [7601]\nverdicts = false\n")
    assert ex.reload()
    assert [c.ports for c in b.built] == [(7600,), (7601,)]
    assert b.sources[0].closed and not b.sources[1].closed
    f.write_text("ports = [7601]\nbogus = 1\n")
    assert not ex.reload()
    assert ex.cfg.ports == (7601,) and ex.reload_errors == 1
    assert "unknown key 'bogus'" in str(ex.health()[1]["last_reload_error"])
    f.write_text("ports = [9999]\nverdicts = false\n")  # the builder refuses: old filters back
    assert not ex.reload()
    assert ex.cfg.ports == (7601,) and b.built[-1].ports == (7601,)
    assert ex.reloads == 2


def test_reload_keeps_the_listen_address_and_flags_win(tmp_path: Path) -> None:
    f = tmp_path / "exporter.toml"
    f.write_text('listen = "127.0.0.1:9500"\nmax_series = 10\nverdicts = false\n')
    ex = Exporter(config.load(f, {"max_series": 5}), f, {"max_series": 5}, build=Builder([]))
    ex._open_pipeline()
    f.write_text('listen = "127.0.0.1:9600"\nmax_series = 20\nverdicts = false\n')
    assert ex.reload()
    assert ex.cfg.listen == "127.0.0.1:9500" and ex.cfg.max_series == 5


def test_verdict_worker_keeps_the_latest_report_and_bounded_counts() -> None:
    many = [_finding("cwnd-limited", "warn", i) for i in range(MAX_FINDINGS + 5)]
    many.append(_finding("rwnd-limited", "error", 1))
    run = fake_runner(many)
    w = VerdictWorker(config.ExporterConfig(ports=(7600,), verdict_window_s=2), run)
    w.run_once()
    w.run_once()
    doc = w.latest()
    assert doc["runs"] == 2 and doc["errors"] == 0
    rep = doc["report"]
    assert rep["findings_total"] == MAX_FINDINGS + 6 and rep["truncated"]
    assert len(rep["findings"]) == MAX_FINDINGS
    assert rep["counts"] == {"cwnd-limited": MAX_FINDINGS + 5, "rwnd-limited": 1}
    sel, window = run.calls[0]
    assert sel.ports == (7600,) and window == 2
    fams = {f.name: f for f in w.collect()}
    samples = {tuple(s.labels.values()): s.value for s in fams["netdiag_verdict_findings"].samples}
    assert samples == {
        ("cwnd-limited", "warn", "connection"): MAX_FINDINGS + 5,
        ("rwnd-limited", "error", "connection"): 1,
    }


def test_verdict_worker_counts_a_failed_run_and_keeps_going() -> None:
    def failing(*_a: Any) -> Report:
        raise NetdiagError("cannot fetch http://x/status", "is the node running?")

    w = VerdictWorker(config.ExporterConfig(), failing)
    w.run_once()
    doc = w.latest()
    assert doc["errors"] == 1 and "cannot fetch" in doc["last_error"] and doc["report"] is None


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_http_endpoints() -> None:
    state = {"ok": True}
    srv = HttpServer(
        "127.0.0.1:0",
        lambda: b"netdiag_x 1\n",
        lambda: (state["ok"], {"status": "ok" if state["ok"] else "stale"}),
        lambda: {"enabled": True, "report": None},
    )
    srv.start()
    base = f"http://{srv.address}"
    try:
        assert _get(base + "/metrics") == (200, b"netdiag_x 1\n")
        assert _get(base + "/healthz")[0] == 200
        state["ok"] = False
        code, body = _get(base + "/healthz")
        assert code == 503 and json.loads(body)["status"] == "stale"
        assert json.loads(_get(base + "/verdicts")[1])["enabled"] is True
        code, body = _get(base + "/nope")
        assert code == 404 and "/metrics" in json.loads(body)["paths"]
    finally:
        srv.close()


def test_a_taken_port_is_one_input_error() -> None:
    srv = HttpServer("127.0.0.1:0", lambda: b"", lambda: (True, {}), dict)
    try:
        with pytest.raises(NetdiagError, match="cannot listen"):
            HttpServer(srv.address, lambda: b"", lambda: (True, {}), dict)
    finally:
        srv.close()


def test_kernel_counters_say_which_kind_of_loss() -> None:
    class Lossy(FakeSource):
        def read(self) -> Snapshot:
            snap = super().read()
            snap.stats = {"lost_events": 2, "recursion_misses": 1, "probe_events": 50}
            return snap

    ex = Exporter(config.ExporterConfig(verdicts=False), build=lambda _c: Pipeline(Lossy([])))
    ex._open_pipeline()
    ex.step()
    lines = _metric_lines(ex, "netdiag_probe_kernel_events_total")
    assert 'netdiag_probe_kernel_events_total{stat="lost_events"} 2.0' in lines
    assert 'netdiag_probe_kernel_events_total{stat="recursion_misses"} 1.0' in lines
    assert ex.health()[1]["probe_stats"]["probe_events"] == 50


def test_reload_switches_the_verdict_engine_on_and_off(tmp_path: Path) -> None:
    f = tmp_path / "exporter.toml"
    f.write_text("verdicts = false\nverdict_window_s = 0.01\nverdict_interval_s = 0.05\n")
    run = fake_runner([_finding("cwnd-limited", "warn", 1)])
    ex = Exporter(config.load(f, {}), f, build=Builder([]), verdict_runner=run)
    ex._open_pipeline()
    ex.http = HttpServer("127.0.0.1:0", lambda: b"", lambda: (True, {}), dict)  # "running"
    try:
        assert not ex.verdicts.running and ex.verdicts_doc() == {"enabled": False, "report": None}
        f.write_text("verdicts = true\nverdict_window_s = 0.01\nverdict_interval_s = 0.05\n")
        assert ex.reload() and ex.verdicts.running
        deadline = time.monotonic() + 10
        while ex.verdicts_doc()["runs"] < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ex.verdicts_doc()["runs"] >= 2
        f.write_text("verdicts = false\n")
        assert ex.reload() and not ex.verdicts.running
    finally:
        ex.verdicts.stop()
        ex.http.close()
