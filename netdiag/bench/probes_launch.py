"""`bench probes launch`: what a resident tracer costs to start and to keep, per loader.

Launches `netdiag trace-peers --json` `runs` times with each loader (NETDIAG_BPF_LOADER=bcc:
bcc and LLVM in the process; light: compiled in a child, cached) in alternating order, and
records per launch the time to the first row, the resident memory once it runs steadily (after
`steady_rows` rows), the peak, and whether libbcc/LLVM is mapped into the tracer. Each loader's
first launch runs on an empty program cache (a fresh NETDIAG_CACHE sharing the header tree),
so "cold" is compile + load and the others are what a restart costs.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from netdiag.bench import output
from netdiag.bench.probes import Tracer, _peak_rss_mb
from netdiag.kernel.host import cache_dir
from netdiag.report.results import ResultBuilder

LOADERS = ("bcc", "light")


def _env(loader: str, cache: Path) -> dict[str, str]:
    env = dict(os.environ, NETDIAG_BPF_LOADER=loader, NETDIAG_CACHE=str(cache))
    return env


def _one(loader: str, cache: Path, interval_s: float, steady_rows: int) -> dict[str, Any]:
    tr = Tracer(interval_s, _env(loader, cache))
    try:
        for _ in range(steady_rows):
            tr.next_line()
        maps = Path(f"/proc/{tr.proc.pid}/maps").read_text()
        rss = _peak_rss_mb(tr.proc.pid, "VmRSS")
        peak = _peak_rss_mb(tr.proc.pid)
    finally:
        tr.proc.send_signal(signal.SIGTERM)
        try:
            tr.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            tr.proc.kill()
            tr.proc.communicate()
    return {
        "loader": loader,
        "first_row_s": round(tr.first_row_s, 3),
        "startup_s": round(tr.startup_s, 3),
        "steady_rss_mb": round(rss, 1),
        "peak_rss_mb": round(peak, 1),
        "llvm_mapped": "LLVM" in maps or "libbcc" in maps,
    }


def launch(
    runs: int = 3,
    interval_s: float = 1.0,
    steady_rows: int = 3,
    progress: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    launches: list[dict[str, Any]] = []
    headers = cache_dir() / "headers"
    with tempfile.TemporaryDirectory(prefix="netdiag-launch-") as tmp:
        caches = {}
        for loader in LOADERS:
            c = Path(tmp) / loader
            c.mkdir()
            if headers.is_dir():  # the header tree is not what is measured: share it
                (c / "headers").symlink_to(headers)
            caches[loader] = c
        for i in range(runs):
            order = LOADERS if i % 2 == 0 else tuple(reversed(LOADERS))
            for loader in order:
                r = _one(loader, caches[loader], interval_s, steady_rows)
                r["launch"] = i + 1
                r["cache"] = "cold" if i == 0 else "warm"
                launches.append(r)
                progress(
                    f"{loader} launch {i + 1}: first row {r['first_row_s']} s, "
                    f"steady RSS {r['steady_rss_mb']} MB"
                )
    summary = []
    for loader in LOADERS:
        mine = [r for r in launches if r["loader"] == loader]
        warm = [r for r in mine if r["cache"] == "warm"] or mine
        summary.append(
            {
                "loader": loader,
                "first_row_s_cold": mine[0]["first_row_s"],
                "first_row_s_warm_median": round(
                    statistics.median(r["first_row_s"] for r in warm), 3
                ),
                "steady_rss_mb_median": round(
                    statistics.median(r["steady_rss_mb"] for r in mine), 1
                ),
                "peak_rss_mb_max": max(r["peak_rss_mb"] for r in mine),
                "llvm_mapped": any(r["llvm_mapped"] for r in mine),
            }
        )
    by = {s["loader"]: s for s in summary}
    ratios = {
        "rss_light_over_bcc": round(
            by["light"]["steady_rss_mb_median"] / by["bcc"]["steady_rss_mb_median"], 3
        )
        if by["bcc"]["steady_rss_mb_median"]
        else None,
        "warm_first_row_light_over_bcc": round(
            by["light"]["first_row_s_warm_median"] / by["bcc"]["first_row_s_warm_median"], 3
        )
        if by["bcc"]["first_row_s_warm_median"]
        else None,
    }
    return {
        "benchmark": "probes launch",
        "runs": runs,
        "interval_s": interval_s,
        "steady_rows": steady_rows,
        "summary": summary,
        "ratios": ratios,
        "launches": launches,
    }


def launch_result(doc: dict[str, Any], parameters: dict[str, Any]) -> ResultBuilder:
    """summary.launch: one row per loader; summary.ratios; raw.launches: one row per launch."""
    res = output.new("probes launch", parameters)
    for row in doc["summary"]:
        res.add_summary("launch", row)
    res.add_summary("ratios", doc["ratios"])
    for r in doc["launches"]:
        res.record("launches", r)
    return res
