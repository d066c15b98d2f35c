"""bench sync's CPU per role (sync_cpu.py): per-block CPU and cores from two snapshots, and the
node processes of a run found by their data directory."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from netdiag.bench.sync_cpu import CpuSnap, figures, role_cpu_s


def test_figures_between_two_snapshots() -> None:
    a = CpuSnap(10.0, 1000, {"joiner": 1.0, "servers": 2.0})
    b = CpuSnap(12.0, 5000, {"joiner": 3.0, "servers": 3.0})
    f = figures(a, b)
    assert f["joiner_cpu_us_per_block"] == 500.0
    assert f["servers_cpu_us_per_block"] == 250.0
    assert f["joiner_cores"] == 1.0 and f["cores_used"] == 1.5
    assert figures(a, a) == {} and figures(None, b) == {}


def test_role_cpu_counts_the_runs_processes_by_data_dir(tmp_path: Path) -> None:
    burn = (
        "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\ninput()"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", burn, "--data-dir", str(tmp_path / name)],
            stdin=subprocess.PIPE,
        )
        for name in ("joiner-x", "server0", "server1")
    ]
    try:
        deadline = time.monotonic() + 30
        got = role_cpu_s(tmp_path, "joiner-x")
        while (got["joiner"] < 0.3 or got["servers"] < 0.6) and time.monotonic() < deadline:
            time.sleep(0.05)
            got = role_cpu_s(tmp_path, "joiner-x")
        assert got["joiner"] >= 0.3 and got["servers"] >= 0.6
        assert got["servers"] > got["joiner"]
        assert role_cpu_s(tmp_path / "elsewhere", "joiner-x") == {"joiner": 0.0, "servers": 0.0}
    finally:
        for p in procs:
            p.kill()
            p.wait()
