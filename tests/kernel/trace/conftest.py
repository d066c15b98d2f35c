"""Real TCP traffic helpers for the probe tests: loopback pairs and the three-namespace path."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator

import pytest

from netdiag.bench import testbed
from netdiag.bench.traffic import Pair, make_pair
from netdiag.measure import sockdiag
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


def wait_quiet(cookies: Iterable[int], ns: str | None = None, timeout_s: float = 30) -> None:
    """Wait until none of these sockets has a byte sent and not yet acknowledged (nor one
    queued unsent). Give every end of the connections: then no segment is in flight and no
    ACK is owed (a delayed ACK is owed only for data its peer still counts unacknowledged),
    so no tcp_probe can move their rows any more — two reads taken one after the other see
    the same traffic. A delayed ACK arrives up to 40-200 ms after the data, later on a loaded
    host: a fixed sleep does not cover it."""
    want = set(cookies)
    end = time.monotonic() + timeout_s
    busy: dict[int, object] = {}
    while time.monotonic() < end:
        seen = {c.cookie: c.info for c in sockdiag.snapshot(ns) if c.cookie in want}
        busy = {k: i for k, i in seen.items() if i is None or i.unacked or i.notsent_bytes}
        if set(seen) == want and not busy:
            return
        time.sleep(0.02)
    raise AssertionError(f"not quiet within {timeout_s} s: busy {busy}, wanted {want}")


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
