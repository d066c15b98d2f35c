"""`netdiag bench emulator`: how faithfully lab links do what they are configured to do.

Per grid point one two-node lab, measured from outside the emulator (`emulator_fidelity`);
`--scale` builds star labs instead (`emulator_scale`); the printed tables are in
`emulator_tables`. This module holds the grid, the run over it and the result format.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from typing import Any

from netdiag.bench import output
from netdiag.bench.emulator_fidelity import Point, measure_point
from netdiag.report.results import ResultBuilder

FULL_GRID = tuple(
    Point(r, d, lo)
    for r in (10_000_000, 100_000_000, 500_000_000)
    for d in (0.01, 0.05, 0.1)
    for lo in (0.0, 0.01)
)
QUICK_GRID = (Point(100_000_000, 0.02, 0.01),)


def run(
    grid: tuple[Point, ...],
    *,
    engine: str = "auto",
    seconds: float = 5.0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    points = []
    # a point with and without loss share rate and delay: RTT/rate once, loss once per lab
    seen: dict[tuple[int, float], Point] = {}
    for p in grid:
        key = (p.rate_bps, p.delay_s)
        if key not in seen or p.loss > seen[key].loss:
            seen[key] = p
    for i, p in enumerate(seen.values()):
        if progress:
            progress(
                f"[{i + 1}/{len(seen)}] {p.rate_bps / 1e6:g} Mbit/s, {p.delay_s * 1e3:g} ms, "
                f"loss {p.loss * 100:g}%"
            )
        points.append(measure_point(p, engine, seconds, 5301 + 3 * i, seed=i + 1))
    return {
        "benchmark": "emulator",
        "time": time.time(),
        "host": {"kernel": platform.release(), "cpus": os.cpu_count()},
        "engine": points[0]["engine"] if points else engine,
        "seconds": seconds,
        "targets": {
            "rtt": "|err| <= 0.1 ms + 0.5 % (calibrated; uncalibrated shown next to it)",
            "rate": "|err| <= 3 %",
            "loss": "in Wilson 95 % CI",
        },
        "points": points,
    }


def to_result(doc: dict[str, Any], parameters: dict[str, Any] | None = None) -> ResultBuilder:
    """summary.points: one row per grid point (key `point`, e.g. "100mbit 20ms 1%"), or
    summary.scale: one row per star size; the targets in metadata. Also converts the JSON of
    older netdiag versions."""
    scale = doc.get("benchmark") == "emulator-scale"
    params = parameters or {"seconds": doc.get("seconds"), "scale": scale}
    res = output.new(
        "emulator",
        params,
        link_engine=doc.get("engine"),
        targets=doc.get("targets"),
    )
    if scale:
        for r in doc["rows"]:
            res.add_summary("scale", {"case": f"{r['namespaces']} namespaces", **output.flat(r)})
        return res
    for p in doc["points"]:
        name = f"{p['rate_bps'] / 1e6:g}mbit {p['delay_us'] / 1e3:g}ms" + (
            f" {p['loss'] * 100:g}%" if p.get("loss") else ""
        )
        row = output.flat(p)
        lo_hi = p.get("loss_ci95")
        if isinstance(lo_hi, list) and len(lo_hi) == 2:
            row.pop("loss_ci95", None)
            row["loss_ci95_lo"], row["loss_ci95_hi"] = lo_hi
        res.add_summary("points", {"point": name, **row})
    return res
