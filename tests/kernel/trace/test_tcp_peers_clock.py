"""No clock read per ACK: a row's last_ns is to the kernel tick yet moves with the traffic and
never precedes first_ns; run-time stats are on only inside the read window."""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from netdiag.bench.traffic import Pair
from netdiag.trace import bpfstats, engine, manifest
from netdiag.trace.overhead import Overhead

SLACK_NS = 100_000_000  # last_ns is "about a tick" early: 10 ms at HZ=100, plus jiffies lag


def _session(port: int, **defines: int) -> engine.Session:
    p = manifest.load("tcp_peers")
    return engine.Session(p, engine.defines_for(p, (port,), False, defines))


def _row(s: engine.Session, cookie: int) -> dict[str, int]:
    rows = {r["sock_cookie"]: r for r in s.read().rows}
    assert cookie in rows, "no row for the client socket"
    return rows[cookie]


def test_last_ns_follows_the_traffic_to_the_tick(loopback_pair: Callable[..., Pair]) -> None:
    pair = loopback_pair(echo=True)
    with _session(pair.port) as s:
        pair.send(1 << 20)
        pair.ping_pong(3)
        first = _row(s, pair.cookie)
        assert first["first_ns"] <= first["last_ns"] <= time.monotonic_ns()
        time.sleep(0.2)  # many ticks at any HZ >= 100
        before = time.monotonic_ns()
        pair.ping_pong(3)
        later = _row(s, pair.cookie)
        assert later["last_ns"] > first["last_ns"]
        assert later["last_ns"] <= time.monotonic_ns()
        # about a tick early (1/HZ); more where jiffies lag (a VM with steal time): a generous
        # bound, an order of magnitude above a tick at HZ=100
        assert before - SLACK_NS <= later["last_ns"]
        assert later["events"] > first["events"]


def test_exact_ns_variant_agrees(loopback_pair: Callable[..., Pair]) -> None:
    """-DEXACT_NS (a clock read per ACK) and the tick clock count the same events."""
    pair = loopback_pair(echo=True)
    with _session(pair.port) as tick, _session(pair.port, EXACT_NS=1) as exact:
        pair.send(1 << 20)
        pair.ping_pong(5)
        time.sleep(0.05)
        a, b = _row(tick, pair.cookie), _row(exact, pair.cookie)
        assert a["events"] > 0 and a["bytes_acked"] > 0
        # the same events; a recursion miss (one program skipped on a CPU) may differ per program
        misses = sum(
            bpfstats.total(bpfstats.read(x.prog_fds())).recursion_misses for x in (tick, exact)
        )
        assert abs(a["events"] - b["events"]) <= misses
        assert a["bytes_acked"] == b["bytes_acked"]
        assert abs(a["last_ns"] - b["last_ns"]) <= SLACK_NS


STATS_LINK = "anon_inode:bpf-stats"  # what an fd from BPF_ENABLE_STATS links to (6.x)


def _stats_fds() -> list[int]:
    """Our fds that keep BPF run-time stats on."""
    fds = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == STATS_LINK:
                fds.append(int(fd))
        except OSError:
            continue
    return fds


def test_stats_count_runs_only_inside_the_window(loopback_pair: Callable[..., Pair]) -> None:
    pair = loopback_pair(echo=True)
    with _session(pair.port) as s:
        o = Overhead([s])
        try:
            o.open_window()
            if o.fd is None:
                err = os.strerror(ctypes.get_errno())
                pytest.skip(f"bpf(BPF_ENABLE_STATS) refused ({err}): needs CAP_SYS_ADMIN")
            assert _stats_fds() == [o.fd]  # the link name is right: the check below can fail
            pair.ping_pong(20)
            got = o.sample()
            assert _stats_fds() == [], "sample() left run-time stats on"
            assert got is not None
            assert got["bpf_runs"] > 0 and got["bpf_stats_window_s"] > 0
            if Path("/proc/sys/kernel/bpf_stats_enabled").read_text().strip() != "0":
                pytest.skip("kernel.bpf_stats_enabled=1: run-time stats are on for everyone")
            outside = bpfstats.total(bpfstats.read(s.prog_fds())).run_cnt
            pair.ping_pong(20)  # outside any window: no run-time accounting of our programs
            moved = bpfstats.total(bpfstats.read(s.prog_fds())).run_cnt - outside
            if moved:  # not ours (checked above): another process holds BPF_ENABLE_STATS
                pytest.skip(f"another process keeps BPF run-time stats on ({moved} runs counted)")
        finally:
            o.close()
