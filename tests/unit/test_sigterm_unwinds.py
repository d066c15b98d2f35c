"""A pytest run stopped with SIGTERM still runs the cleanup of the test in flight."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_sigterm_unwinds_the_test_in_flight_through_its_cleanup(tmp_path: Path) -> None:
    started, cleaned = tmp_path / "started", tmp_path / "cleaned"
    inner = tmp_path / "test_inner.py"
    inner.write_text(
        "import time\n"
        "def test_holds_kernel_state():\n"
        "    try:\n"
        f"        open({str(started)!r}, 'w').close()\n"
        "        time.sleep(120)\n"
        "    finally:\n"
        f"        open({str(cleaned)!r}, 'w').close()\n"
    )
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-p", "no:cacheprovider"]
    proc = subprocess.Popen(
        [*cmd, "--rootdir", str(tmp_path), str(inner)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        end = time.monotonic() + 120
        while not started.exists():
            assert proc.poll() is None, proc.communicate()[0].decode()
            assert time.monotonic() < end, "the inner test never started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=60)[0].decode()
    finally:
        proc.kill()
    assert cleaned.exists(), f"the test's finally did not run on SIGTERM:\n{out}"
    assert proc.returncode != 0, out
