"""Real TCP traffic helpers for the probe tests: loopback pairs and the three-namespace path."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Callable, Iterator

import pytest

from netdiag.bench import testbed
from netdiag.bench.traffic import Pair, make_pair
from tests.conftest import missing_bcc, missing_tool


def bpf_fds() -> int:
    """Open fds of this process that are BPF programs, perf events or links (attachments)."""
    import os

    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            t = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if t in ("anon_inode:bpf-prog", "anon_inode:[perf_event]", "anon_inode:bpf_link"):
            n += 1
    return n


def progs_of(pid: int) -> list[int]:
    """Ids of the BPF programs process `pid` holds (prog_id in /proc/PID/fdinfo; this
    bpftool build reports no `pids`)."""
    import os

    ids = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:bpf-prog":
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                for line in f:
                    if line.startswith("prog_id:"):
                        ids.append(int(line.split()[1]))
        except OSError:
            continue
    return ids


def loaded_prog_ids() -> set[int]:
    """Every BPF program the kernel has loaded, per bpftool."""
    out = subprocess.run(
        ["bpftool", "prog", "show", "-j"], capture_output=True, text=True, check=True
    ).stdout
    return {int(p["id"]) for p in json.loads(out or "[]")}


@pytest.fixture(autouse=True)
def _needs_bcc_and_tools() -> None:
    reason = missing_bcc() or missing_tool("ip", "tc", "nstat", "bpftool")
    if reason:
        pytest.skip(reason)


@pytest.fixture
def lossy_path() -> Iterator[testbed.Path3]:
    """client — router (TBF 50 Mbit/s, 20 kB queue: real drops) — server."""
    with testbed.path3(rate_mbit=50) as p:
        yield p


@pytest.fixture
def loopback_pair() -> Iterator[Callable[..., Pair]]:
    made: list[Pair] = []

    def mk(echo: bool = False, cc: str | None = None) -> Pair:
        p = make_pair(None, None, "127.0.0.1", echo=echo, cc=cc)
        made.append(p)
        return p

    yield mk
    for p in made:
        with contextlib.suppress(OSError):
            p.close()
