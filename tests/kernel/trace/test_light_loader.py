"""The light loader on the real kernel: trace-peers runs without bcc/LLVM in its process, the
second load of a program comes from the cache, a torn cache entry is compiled again, and the
light and bcc loaders count the same events."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from netdiag.bench.traffic import Pair, cookie_of
from netdiag.kernel.bcc_loader import LoadEnv
from netdiag.trace import engine, manifest
from tests.cli import NETDIAG
from tests.kernel.trace.conftest import progs_of, wait_quiet


def _session(port: int, cache: Path, loader: str | None = None) -> engine.Session:
    p = manifest.load("tcp_peers")
    defines = engine.defines_for(p, (port,), False)
    return engine.Session(p, defines, env=LoadEnv(cache=cache), loader=loader)


def test_trace_peers_holds_no_bcc_and_caches_its_program(tmp_path: Path) -> None:
    env = dict(os.environ, NETDIAG_CACHE=str(tmp_path))
    env.pop("NETDIAG_BPF_LOADER", None)
    proc = subprocess.Popen(
        [*NETDIAG, "trace-peers", "--json", "--interval", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("{"), proc.stderr.read() if proc.stderr else line
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        progs = progs_of(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    assert len(progs) >= 3, "the tracer holds its programs itself"
    assert "libbcc" not in maps and "LLVM" not in maps, "bcc/LLVM mapped into trace-peers"
    assert len(list((tmp_path / "bpf").glob("tcp_peers-*.json"))) == 1


def test_second_load_comes_from_the_cache(
    tmp_path: Path, loopback_pair: Callable[..., Pair]
) -> None:
    pair = loopback_pair(echo=True)
    with _session(pair.port, tmp_path) as s:
        assert s.bpf is not None and s.bpf.from_cache is False
    with _session(pair.port, tmp_path) as s:
        assert s.bpf is not None and s.bpf.from_cache is True
        assert s.attached == 3
        pair.send(1 << 20)
        pair.ping_pong(3)
        rows = {r["sock_cookie"]: r for r in s.read().rows}
    assert rows[pair.cookie]["bytes_acked"] >= 1 << 20
    # a torn entry (a crash mid-write by an older netdiag, a full disk) is compiled again
    [entry] = (tmp_path / "bpf").glob("tcp_peers-*.json")
    entry.write_text('{"format": 1, "maps": [')
    with _session(pair.port, tmp_path) as s:
        assert s.bpf is not None and s.bpf.from_cache is False


def test_light_and_bcc_loaders_count_the_same(
    tmp_path: Path, loopback_pair: Callable[..., Pair]
) -> None:
    pair = loopback_pair(echo=True)
    with _session(pair.port, tmp_path) as light, _session(pair.port, tmp_path, "bcc") as old:
        pair.send(2 << 20)
        pair.ping_pong(3)
        # four reads one after the other: no ACK (the client's delayed one of the last `!`)
        # may reach either socket between them, or the event counts differ by one
        wait_quiet((pair.cookie, cookie_of(pair.server)))
        a = {r["sock_cookie"]: r for r in light.read().rows}[pair.cookie]
        b = {r["sock_cookie"]: r for r in old.read().rows}[pair.cookie]
        stats_a, stats_b = light.read().stats, old.read().stats
    for k in ("bytes_acked", "srtt_hist", "snd_cwnd", "state", "laddr", "raddr", "rport"):
        assert a[k] == b[k], k
    assert stats_a["probe_events"] == stats_b["probe_events"] > 0
