"""Kernel-measured run time of our BPF programs (per-event cost), without touching sysctls.

BPF_ENABLE_STATS returns an fd; run-time accounting is on while any such fd is open and goes
off by itself when this process exits (even on kill -9) — unlike `kernel.bpf_stats_enabled`.
Each program's `run_time_ns` / `run_cnt` is read from /proc/self/fdinfo/<prog fd>.
"""

from __future__ import annotations

import ctypes
import functools
import os
from dataclasses import dataclass
from pathlib import Path

BPF_ENABLE_STATS = 32
BPF_STATS_RUN_TIME = 0
SYS_BPF = 321  # x86_64


@dataclass(frozen=True)
class ProgStats:
    run_time_ns: int
    run_cnt: int
    # times the kernel skipped the program because a BPF program was already running on that
    # CPU (e.g. softirq RX interrupting one of ours in process context): lost events
    recursion_misses: int = 0


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)  # libc is in the process (no ldconfig fork)


def enable() -> int | None:
    """Turn on run-time stats; returns the fd that keeps them on (None if unsupported:
    ctypes.get_errno() says why)."""
    libc = _libc()
    attr = (ctypes.c_uint32 * 4)(BPF_STATS_RUN_TIME, 0, 0, 0)
    fd = libc.syscall(SYS_BPF, BPF_ENABLE_STATS, ctypes.byref(attr), ctypes.sizeof(attr))
    return int(fd) if fd >= 0 else None


def disable(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)


def parse_fdinfo(text: str) -> ProgStats:
    vals: dict[str, int] = {}
    for line in text.splitlines():
        k, _, v = line.partition(":")
        if k.strip() in ("run_time_ns", "run_cnt", "recursion_misses"):
            vals[k.strip()] = int(v.strip())
    return ProgStats(
        vals.get("run_time_ns", 0), vals.get("run_cnt", 0), vals.get("recursion_misses", 0)
    )


def read(prog_fds: dict[str, int], proc: Path = Path("/proc")) -> dict[str, ProgStats]:
    return {
        name: parse_fdinfo((proc / "self/fdinfo" / str(fd)).read_text())
        for name, fd in prog_fds.items()
    }


def total(stats: dict[str, ProgStats]) -> ProgStats:
    return ProgStats(
        sum(s.run_time_ns for s in stats.values()),
        sum(s.run_cnt for s in stats.values()),
        sum(s.recursion_misses for s in stats.values()),
    )
