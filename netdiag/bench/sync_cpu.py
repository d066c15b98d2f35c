"""CPU seconds per role during a sync benchmark run: the joiner (with its verify workers) and
the servers, read from /proc (psutil) for the node processes whose data directory is under the
run's work directory. Two snapshots (sync under way, sync done) give each role's CPU per block
committed and the cores the whole run used: whether a run was bound by the host's cores (the
servers share them with the joiner) or by something else."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import psutil


def _tree_cpu_s(p: psutil.Process) -> float:
    total = 0.0
    for q in [p, *p.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            t = q.cpu_times()
            total += t.user + t.system
    return total


def role_cpu_s(work: Path, joiner: str) -> dict[str, float]:
    """{"joiner": s, "servers": s}: CPU seconds so far of the node processes run with a data
    directory under ``work`` (the joiner's named ``joiner``; its children counted with it)."""
    out = {"joiner": 0.0, "servers": 0.0}
    mine = str(work / joiner)
    for p in psutil.process_iter(["cmdline"]):
        argv = p.info.get("cmdline") or []
        if "--data-dir" not in argv:
            continue
        d = argv[argv.index("--data-dir") + 1] if argv.index("--data-dir") + 1 < len(argv) else ""
        if not d.startswith(str(work) + "/"):
            continue
        with contextlib.suppress(psutil.Error):
            out["joiner" if d == mine else "servers"] += _tree_cpu_s(p)
    return out


@dataclass
class CpuSnap:
    t: float  # perf_counter
    height: int
    cpu: dict[str, float]


def figures(a: CpuSnap | None, b: CpuSnap | None) -> dict[str, float]:
    """CPU per block (µs) of the joiner and of the servers, and the cores the run used (both
    roles' CPU over the wall time) between two snapshots; {} when there is nothing between
    them."""
    if a is None or b is None or b.height <= a.height or b.t <= a.t:
        return {}
    n, wall = b.height - a.height, b.t - a.t
    j = b.cpu["joiner"] - a.cpu["joiner"]
    s = b.cpu["servers"] - a.cpu["servers"]
    return {
        "joiner_cpu_us_per_block": round(j / n * 1e6, 1),
        "servers_cpu_us_per_block": round(s / n * 1e6, 1),
        "joiner_cores": round(j / wall, 2),
        "cores_used": round((j + s) / wall, 2),
        "cpu_window_blocks": n,
    }
