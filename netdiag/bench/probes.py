"""Benchmarks of the probes themselves: what tracing costs (here) and how true its figures are
(probes_accuracy.py).

overhead — bulk TCP over a veth path (client ns — router ns — server ns, iperf3), runs with
           and without `netdiag trace-peers` attached, alternating in one invocation; the
           throughput ratio, the probes' events/s and kernel-measured ns/event, lost events,
           start-up time to first output and peak RSS of trace-peers.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netdiag.bench import output, probes_rates, testbed
from netdiag.errors import KernelFeatureError, NetdiagError
from netdiag.report.results import ResultBuilder

Progress = Callable[[str], None]


def _netdiag_argv() -> list[str]:
    exe = Path(sys.executable).with_name("netdiag")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "netdiag.cli.main"]


def _require(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        raise KernelFeatureError(f"benchmark needs {', '.join(missing)}", "run `make setup`")


# --- overhead ---------------------------------------------------------------------------


@dataclass
class TracerRun:
    startup_s: float
    lines: list[dict[str, Any]]
    peak_rss_mb: float
    first_row_s: float = 0.0
    # user + system CPU of the tracer process over the measured window (mark() to stop()),
    # in % of one CPU; None when no window was marked
    cpu_pct: float | None = None


def cpu_ns(pid: int, proc: Path = Path("/proc")) -> int | None:
    """User + system CPU of all threads of a process so far, in ns: the first field of each
    thread's schedstat (ns, not the 10 ms ticks of /proc/PID/stat); None when it is gone."""
    try:
        tasks = list((proc / str(pid) / "task").iterdir())
    except OSError:
        return None
    total = 0
    for t in tasks:
        try:
            total += int((t / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended meanwhile
    return total


def cpu_pct(start: tuple[int, float] | None, end: tuple[int, float] | None) -> float | None:
    """% of one CPU between two (cpu ns, monotonic s) marks."""
    if start is None or end is None or end[1] <= start[1]:
        return None
    return round((end[0] - start[0]) / ((end[1] - start[1]) * 1e9) * 100, 3)


class Tracer:
    """`netdiag trace-peers --json` as a child process: time to first line, NDJSON, peak RSS."""

    def __init__(
        self,
        interval_s: float,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
    ) -> None:
        self.interval_s = interval_s
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [*_netdiag_argv(), "trace-peers", "--json", "--interval", str(interval_s), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline()
        if not first.startswith("{"):
            err = self.proc.stderr.read() if self.proc.stderr else ""
            self.proc.kill()
            raise NetdiagError(f"trace-peers did not start: {first}{err}", "run `netdiag doctor`")
        # first output = start-up (imports, compile or cache, load, attach) + the first window
        # (`--first-read`, shorter than the interval): start-up is the part before the window
        self.first_row_s = time.monotonic() - self.t0
        self.lines = [json.loads(first)]
        window = float(self.lines[0].get("interval_s") or 0.0)
        self.startup_s = max(0.0, self.first_row_s - window)
        self._mark: tuple[int, float] | None = None

    def _cpu(self) -> tuple[int, float] | None:
        ns = cpu_ns(self.proc.pid)
        return None if ns is None else (ns, time.monotonic())

    def mark(self) -> None:
        """The measured window (the "on" iperf3 run) starts now: its CPU is counted to stop()."""
        self._mark = self._cpu()

    def next_line(self) -> None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.startswith("{"):
            self.lines.append(json.loads(line))

    def stop(self) -> TracerRun:
        cpu = cpu_pct(self._mark, self._cpu()) if self._mark else None
        rss = _peak_rss_mb(self.proc.pid)
        self.proc.send_signal(signal.SIGTERM)
        out, _err = self.proc.communicate(timeout=30)
        for x in out.splitlines():
            if x.startswith("{"):
                try:
                    self.lines.append(json.loads(x))
                except json.JSONDecodeError:  # a line cut by the stop; the others count
                    continue
        return TracerRun(self.startup_s, self.lines, rss, self.first_row_s, cpu)


def _peak_rss_mb(pid: int, field: str = "VmHWM") -> float:
    """Peak (VmHWM) or current (VmRSS) resident memory of a process, in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _iperf(path: testbed.Path3, seconds: float, port: int, rate: str = "max") -> float:
    limit = probes_rates.iperf_args(rate)  # -b: fewer ACKs per second; seg:N: more
    r = subprocess.run(
        path.exec(
            path.client,
            "iperf3",
            "-c",
            path.server_ip,
            "-p",
            str(port),
            "-t",
            str(seconds),
            "-J",
            *limit,
        ),
        capture_output=True,
        text=True,
        timeout=seconds + 30,
    )
    if r.returncode != 0:
        raise NetdiagError(
            f"iperf3 failed: {r.stdout[-300:]}{r.stderr[-300:]}", "is iperf3 installed?"
        )
    return float(json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"])


def variant_name(sample_ms: float, hook: str = "tracepoint") -> str:
    base = "per-ack" if sample_ms <= 0 else f"sample-{sample_ms:g}ms"
    return base if hook == "tracepoint" else f"{base}@{hook}"  # the default hook: no suffix


def _hooks_seen(runs: list[TracerRun]) -> str:
    """The tcp_probe hook(s) the tracer's lines report ("tp_btf", "tracepoint"; "" if none)."""
    return ",".join(sorted({str(ln["hook"]) for t in runs for ln in t.lines if ln.get("hook")}))


@dataclass
class _RateRuns:
    off: list[float]
    on: dict[str, list[float]]
    tracers: dict[str, list[TracerRun]]
    loads: list[float] = field(default_factory=list)  # 1-min load average at each round start


def overhead(
    runs: int = 3,
    seconds: float = 3.0,
    interval_s: float = 1.0,
    progress: Progress = lambda _m: None,
    rates: tuple[str, ...] = ("max",),
    samples_ms: tuple[float, ...] = (0.0,),
    hooks: tuple[str, ...] = ("tracepoint",),
) -> dict[str, Any]:
    """Runs without and with trace-peers at each iperf3 rate (`max` = unpaced, CPU-bound;
    `2G` etc. = paced: a lower event rate), for each probe variant (`samples_ms`: trace-peers
    --sample-ms; 0 = every ACK), in one invocation: per round, off and every variant back to
    back, the order reversed every other round so drift favours none. The top-level figures
    are the first rate's first variant's; `by_rate` has ratio, ns/event and lost events per
    rate and variant. `hooks` (trace-peers --hook: tracepoint, tp_btf, auto) multiply the
    variants: `per-ack@tp_btf` next to `per-ack` (the classic tracepoint) side by side."""
    _require("iperf3", "ip")
    port = 5201
    variants = {variant_name(v, h): v for h in hooks for v in samples_ms}
    hook_of = {variant_name(v, h): h for h in hooks for v in samples_ms}
    per_rate: dict[str, _RateRuns] = {}
    with testbed.path3(rate_mbit=None, one_segment_skbs=False) as path:
        server = subprocess.Popen(
            path.exec(path.server, "iperf3", "-s", "-p", str(port)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(0.3)
            _iperf(path, 1, port)  # warm-up: ARP, route caches, iperf3 startup
            for rate in rates:
                ns = (path.client, path.server)  # seg:N: one-segment skbs for this rate's runs
                with probes_rates.prepared(ns, rate):
                    rr = per_rate.setdefault(
                        rate, _RateRuns([], {v: [] for v in variants}, {v: [] for v in variants})
                    )
                    for i in range(runs):
                        rr.loads.append(round(os.getloadavg()[0], 2))
                        modes = ["off", *variants]
                        for mode in modes if i % 2 == 0 else reversed(modes):
                            if mode == "off":
                                got = _iperf(path, seconds, port, rate)
                                rr.off.append(got)
                                what = "without probe"
                            else:
                                args: tuple[str, ...] = (
                                    ("--sample-ms", str(variants[mode])) if variants[mode] else ()
                                )
                                if hook_of[mode] != "tracepoint":
                                    args += ("--hook", hook_of[mode])
                                tr = Tracer(interval_s, args=args)
                                try:
                                    tr.mark()
                                    got = _iperf(path, seconds, port, rate)
                                    rr.on[mode].append(got)
                                finally:
                                    rr.tracers[mode].append(tr.stop())
                                what = f"with trace-peers ({mode})"
                            progress(f"{rate} run {i + 1}/{runs} {what}: {got / 1e9:.2f} Gbit/s")
        finally:
            server.terminate()
            server.wait(timeout=10)
    by_rate = [
        {
            **probes_rates.figures(
                rate, name, variants[name], rr.off, rr.on[name], rr.tracers[name], rr.loads
            ),
            "hook": _hooks_seen(rr.tracers[name]),
        }
        for rate, rr in per_rate.items()
        for name in variants
    ]
    every = [t for rr in per_rate.values() for ts in rr.tracers.values() for t in ts]
    fell_back = [ln for t in every for ln in t.lines if ln.get("source") == "sock_diag"]
    if fell_back:  # then the "with" runs carried no probe: their throughput is not its cost
        raise NetdiagError(
            "trace-peers fell back to sock_diag polling during the overhead runs",
            "run `netdiag doctor`: the benchmark needs eBPF working",
        )
    first = next(iter(variants))
    rr0 = per_rate[rates[0]]
    off, on, tracer_runs = rr0.off, rr0.on[first], rr0.tracers[first]
    # the first rate's first variant's row (ratio, ns/event incl. the weighted figure, lost
    # events) is the summary, plus what only the summary has (the runs' lists, startup, RSS)
    loads = [x for rr in per_rate.values() for x in rr.loads]
    # the load range too is the first rate's rounds (those its ratio was measured at)
    head = probes_rates.figures(rates[0], first, variants[first], off, on, tracer_runs, rr0.loads)
    for k in ("rate", "variant", "sample_ms", "throughput_off_bps", "throughput_on_bps"):
        del head[k]
    ratio = head["throughput_ratio_on_off"]
    return {
        "benchmark": "probes overhead",
        "runs": runs,
        "seconds_per_run": seconds,
        "interval_s": interval_s,
        "variants": list(variants),
        "hook": _hooks_seen(tracer_runs),
        "throughput_off_bps": off,
        "throughput_on_bps": on,
        **head,
        "throughput_cost_pct": round((1 - ratio) * 100, 2),
        # each pair ran back to back: the median of per-pair ratios resists load drift
        "pair_ratios": [round(b / a, 4) for a, b in zip(off, on, strict=True)],
        "startup_s": [round(t.startup_s, 3) for t in tracer_runs],
        "tracer_cpu_pct_runs": [t.cpu_pct for t in tracer_runs],
        "host_load_avg_1m_rounds": loads,  # every rate's rounds, in the order they ran
        "startup_s_median": round(statistics.median(t.startup_s for t in tracer_runs), 3),
        "first_row_s_median": round(statistics.median(t.first_row_s for t in every), 3),
        "peak_rss_mb_max": round(max(t.peak_rss_mb for t in every), 1),
        "cpus": os.cpu_count(),
        "by_rate": by_rate,
    }


# --- the one result format -----------------------------------------------------------------


def overhead_result(doc: dict[str, Any], parameters: dict[str, Any] | None = None) -> ResultBuilder:
    """summary.overhead: the run's figures in one row; raw.pairs: one row per back-to-back
    pair (without / with trace-peers). Also converts the JSON of older netdiag versions."""
    params = parameters or {
        "runs": doc["runs"],
        "seconds": doc["seconds_per_run"],
        "interval": doc["interval_s"],
    }
    res = output.new("probes overhead", params)
    res.add_summary(
        "overhead",
        {k: v for k, v in doc.items() if output.scalar(v) and k not in ("benchmark", "cpus")},
    )
    for row in doc.get("by_rate", []):
        res.add_summary("by_rate", row)
    starts = doc.get("startup_s", [])
    cpus = doc.get("tracer_cpu_pct_runs", [])
    for i, (off, on) in enumerate(
        zip(doc["throughput_off_bps"], doc["throughput_on_bps"], strict=True), start=1
    ):
        res.record(
            "pairs",
            {
                "pair": i,
                "throughput_off_bps": off,
                "throughput_on_bps": on,
                "ratio_on_off": round(on / off, 4) if off else None,
                "startup_s": starts[i - 1] if i <= len(starts) else None,
                "tracer_cpu_pct": cpus[i - 1] if i <= len(cpus) else None,
            },
        )
    return res
