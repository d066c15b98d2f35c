"""The tracer's CPU over the measured window: schedstat of every thread, in % of one CPU."""

from __future__ import annotations

import os
import time
from pathlib import Path

from netdiag.bench import probes


def _proc(tmp: Path, pid: int, threads: dict[str, str]) -> Path:
    for tid, text in threads.items():
        d = tmp / str(pid) / "task" / tid
        d.mkdir(parents=True)
        (d / "schedstat").write_text(text)
    return tmp


def test_cpu_ns_adds_every_threads_run_time(tmp_path: Path) -> None:
    proc = _proc(tmp_path, 42, {"42": "1000 5 3\n", "43": "500 0 1\n", "44": "garbage\n"})
    assert probes.cpu_ns(42, proc) == 1500
    assert probes.cpu_ns(7, proc) is None  # gone


def test_cpu_pct_is_cpu_time_over_wall_time() -> None:
    assert probes.cpu_pct((0, 10.0), (20_000_000, 12.0)) == 1.0  # 20 ms of 2 s
    assert probes.cpu_pct(None, (1, 1.0)) is None
    assert probes.cpu_pct((0, 1.0), (5, 1.0)) is None


def test_this_process_uses_cpu() -> None:
    before = probes.cpu_ns(os.getpid())
    assert before is not None
    deadline = time.monotonic() + 10  # schedstat of a running task moves at the next tick
    after = before
    while after == before and time.monotonic() < deadline:
        sum(range(100_000))
        after = probes.cpu_ns(os.getpid()) or before
    assert after > before
