"""tcp_peers on real kernel TCP: RTT, cwnd and retransmits against the kernel's own figures,
and no probe left attached afterwards."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable

from netdiag.bench.traffic import Pair
from netdiag.measure import sockdiag
from netdiag.trace import engine, manifest
from tests.cli import NETDIAG
from tests.kernel.trace.conftest import bpf_fds, loaded_prog_ids, progs_of


def _session(port: int) -> engine.Session:
    p = manifest.load("tcp_peers")
    return engine.Session(p, engine.defines_for(p, (port,), False))


def _wait_all_acked(cookie: int, ns: str | None, timeout_s: float = 10) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        info = _diag(cookie, ns).info
        if info is not None and info.unacked == 0:
            time.sleep(0.05)
            return
        time.sleep(0.02)
    raise AssertionError("data still unacknowledged")


def _diag(cookie: int, ns: str | None = None) -> sockdiag.TcpConn:
    for c in sockdiag.snapshot(ns):
        if c.cookie == cookie:
            return c
    raise AssertionError(f"sock_diag has no socket with cookie {cookie}")


def test_rtt_and_cwnd_agree_with_sock_diag(loopback_pair: Callable[..., Pair]) -> None:
    before = bpf_fds()
    # cubic: it leaves cwnd alone while app-limited. BBR recomputes cwnd on every ACK *after*
    # tcp_probe fired, so under bbr the probe's cwnd trails tcp_info by one ACK.
    pair = loopback_pair(echo=True, cc="cubic")
    with _session(pair.port) as s:
        assert s.attached == 3
        pair.send(8 << 20)
        # app-limited exchanges: cwnd stops moving, tcp_probe sees the final value
        pair.ping_pong(5)
        time.sleep(0.05)
        snap = s.read()
        diag = _diag(pair.cookie)
    assert bpf_fds() == before, "probe fds left open after close()"
    rows = {r["sock_cookie"]: r for r in snap.rows}
    assert pair.cookie in rows, f"no row for the client's cookie {pair.cookie}: {list(rows)}"
    r = rows[pair.cookie]
    assert diag.info is not None
    assert r["state"] == "ESTABLISHED" and r["rport"] == pair.port
    assert r["srtt_min_us"] > 0 and diag.info.min_rtt_us > 0
    # the smoothed RTT can never be below the kernel's minimum RTT sample by much
    assert r["srtt_min_us"] >= diag.info.min_rtt_us * 0.5
    assert r["snd_cwnd"] == diag.info.snd_cwnd
    assert r["ssthresh"] == diag.info.snd_ssthresh
    assert r["bytes_acked"] >= (8 << 20) * 0.5  # acks before the first tcp_probe are not seen
    assert sum(r["srtt_hist"]) > 0 and r["srtt_p50_us"] is not None
    assert snap.lost == 0


def test_sampled_rows_agree_with_per_ack_rows_on_the_same_traffic(
    loopback_pair: Callable[..., Pair],
) -> None:
    """-DSAMPLE_NS (trace-peers --sample-ms): per socket, detail at most once per period;
    events, bytes and min/max srtt still come from every ACK: folded at the socket's next
    sample on the same CPU, and what still waits on any CPU added at each read. Both variants
    attached at once see the same ACKs."""
    pair = loopback_pair(echo=True)
    p = manifest.load("tcp_peers")
    per_ack = engine.Session(p, engine.defines_for(p, (pair.port,), False))
    sampled = engine.Session(
        p, engine.defines_for(p, (pair.port,), False, {"SAMPLE_NS": 20_000_000})
    )
    with per_ack, sampled:
        pair.send(16 << 20)
        _wait_all_acked(pair.cookie, None)
        time.sleep(0.1)  # past the sample period: the next event folds what is pending
        pair.ping_pong(1)
        time.sleep(0.05)
        a = next(r for r in per_ack.read().rows if r["sock_cookie"] == pair.cookie)
        b = next(r for r in sampled.read().rows if r["sock_cookie"] == pair.cookie)
    assert a["samples"] == a["events"]  # per ACK: every event is a sample
    assert b["samples"] < b["events"]  # sampled: the fast path took most ACKs
    # every ACK counted: what waits per CPU for a next sample there is added by the read (a
    # late delayed ACK between the two reads, or a fold lost to a slot race, may differ by one)
    assert a["events"] - 2 <= b["events"] <= a["events"] + 2
    assert 0.9 * a["bytes_acked"] <= b["bytes_acked"] <= a["bytes_acked"]
    assert a["srtt_min_us"] <= b["srtt_min_us"] <= b["srtt_max_us"] <= a["srtt_max_us"]
    assert b["srtt_min_us"] <= b["srtt_mean_us"] <= b["srtt_max_us"]
    assert 0 < sum(b["srtt_hist"]) <= b["samples"]  # the histogram is of samples (srtt > 0)


def test_lifecycle_rows_close_and_are_reported_once(loopback_pair: Callable[..., Pair]) -> None:
    with _session(0) as s:
        s.read()
        t0 = time.monotonic()
        pair = loopback_pair()
        cookie = pair.cookie
        pair.send(1 << 20)
        pair.close()
        time.sleep(0.1)
        first = {r["sock_cookie"]: r for r in s.read().rows}
        lived_at_most_s = time.monotonic() - t0
        second = {r["sock_cookie"]: r for r in s.read().rows}
    assert cookie in first
    r = first[cookie]
    assert r["state"] == "CLOSE" and r["closed_ns"] > r["open_ns"] > 0
    assert 0 < r["age_s"] <= lived_at_most_s  # the socket's own life, not the session's
    assert cookie not in second, "a closed socket must be reported once, then dropped"


def _trace_peers_json() -> subprocess.Popen[str]:
    """`netdiag trace-peers --json --interval 0.2` as a child process, its output piped."""
    return subprocess.Popen(
        [*NETDIAG, "trace-peers", "--json", "--interval", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_kill_9_leaves_no_probe_attached() -> None:
    proc = _trace_peers_json()
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("{"), proc.stderr.read() if proc.stderr else line
        progs = progs_of(proc.pid)
        assert len(progs) >= 3, f"bpftool shows {progs} for pid {proc.pid}"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert set(progs) <= loaded_prog_ids() | set(progs)
    deadline = time.monotonic() + 5
    live: set[int] = set(progs)
    while live and time.monotonic() < deadline:
        live = loaded_prog_ids() & set(progs)
        time.sleep(0.1)
    assert not live, f"programs {live} outlived their kill -9'd owner"


def test_sigterm_detaches_and_exits_cleanly() -> None:
    proc = _trace_peers_json()
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("{")
    progs = progs_of(proc.pid)
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=10)
    assert rc == 130
    assert len(progs) >= 3
    assert not loaded_prog_ids() & set(progs)
