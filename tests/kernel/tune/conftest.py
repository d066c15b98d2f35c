"""Fixtures for the tune kernel tier: a scratch namespace `nd-tune-…`, a private journal,
a scratch cgroup v2 directory, and a CLI runner. Nothing here touches the host's
tcp_congestion_control; host sysctls a test does change are restored by the test's revert
and, as a backstop, by the `state` fixture's final `--revert`."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from netdiag.kernel import cgroup, netns
from tests.cli import NETDIAG, run_netdiag


@pytest.fixture
def tune_netns() -> Iterator[str]:
    with netns.scratch("tune-t") as name:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    env = dict(
        os.environ,
        NETDIAG_STATE=str(tmp_path / "state"),
        NETDIAG_SYSCTL_D=str(tmp_path / "sysctl.d"),
    )
    monkeypatch.setenv("NETDIAG_STATE", env["NETDIAG_STATE"])
    monkeypatch.setenv("NETDIAG_SYSCTL_D", env["NETDIAG_SYSCTL_D"])
    yield env
    # backstop: whatever a failing test left live is reverted
    run_netdiag("tune", "--revert", env=env, timeout=60)


@pytest.fixture
def scratch_cgroup() -> Iterator[Path]:
    root = cgroup.v2_root()
    path = root / f"nd-tune-t-{secrets.token_hex(3)}"
    path.mkdir()
    try:
        yield path
    finally:
        # move stragglers back to the root, then remove
        with contextlib.suppress(OSError):
            for pid in (path / "cgroup.procs").read_text().split():
                with contextlib.suppress(OSError):
                    (root / "cgroup.procs").write_text(pid)
        with contextlib.suppress(OSError):
            path.rmdir()


def run(
    args: list[str], env: dict[str, str], check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return run_netdiag(*args, env=env, timeout=timeout, check=check)


def raw(path: str, ns: str | None = None) -> bytes:
    """Exact bytes of a /proc/sys file (in namespace ns)."""
    p = Path("/proc/sys") / path.replace(".", "/")
    return netns.run_in(ns, p.read_bytes)


def wait_marker(proc: subprocess.Popen[str], text: str, max_lines: int = 20) -> str:
    """Read the child's stderr until the test-pause marker (other lines, e.g. a header
    version warning from the bcc loader, may come first)."""
    assert proc.stderr is not None
    seen = []
    for _ in range(max_lines):
        line = proc.stderr.readline()
        seen.append(line)
        if text in line or not line:
            break
    assert text in seen[-1], "".join(seen)
    return seen[-1]


@contextlib.contextmanager
def paused_then_killed(args: list[str], env: dict[str, str], after: int) -> Iterator[None]:
    """`netdiag ARGS` stopped by the test pause once ``after`` changes are made; the body runs
    while it waits there, then it is killed with SIGKILL (as an operator's kill -9)."""
    proc = subprocess.Popen(
        [*NETDIAG, *args],
        env=dict(env, NETDIAG_TUNE_TEST_PAUSE_AFTER=str(after)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_marker(proc, f"test pause after {after} changes")
        yield
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
