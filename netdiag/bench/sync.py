"""Sync benchmark: a late joiner catches up a chain from 1, 2, 4 … peers.

Everything runs as real `netdiag node run` processes on loopback (TLS on): the servers hold a
chain written straight into their stores; for each peer count a fresh joiner is started with
that many servers as bootstrap peers and watched through its REST API until it reaches the
tip. Its own figures (blocks committed by parallel sync and the time from sync start to
finish) give blocks/s; peer counts run interleaved, round after round, so the ratios compare
runs taken under the same machine load.

The chain is built with the node's declared testkit (netdiag.node.testkit, the one exception
to "tools touch the node only through its interfaces"); processes are started by the one
cluster launcher (netdiag.lab.cluster) and watched through netdiag.nodeapi.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netdiag.bench import output
from netdiag.bench.sync_api import ApiProbe
from netdiag.bench.sync_cpu import CpuSnap, role_cpu_s
from netdiag.bench.sync_cpu import figures as cpu_figures
from netdiag.errors import CheckFailed
from netdiag.lab.cluster import node_env, node_run_argv
from netdiag.node import testkit
from netdiag.nodeapi import NodeApi
from netdiag.report.results import ResultBuilder

SLOT_MS = 10
API_SUMMARY = (
    "api_sync_status_p99_ms",
    "api_idle_status_p99_ms",
    "api_sync_tx_p99_ms",
    "api_idle_tx_p99_ms",
    "api_sync_tx_n",
    "api_locked_status_p99_ms",
    "api_locked_tx_p99_ms",
    "api_locked_tx_n",
)
CPU_SUMMARY = ("joiner_cpu_us_per_block", "servers_cpu_us_per_block", "joiner_cores", "cores_used")


@dataclass
class SyncRun:
    peers: int
    blocks: int
    sync_s: float  # the joiner's own sync_started .. sync_finished
    wall_s: float  # process start to tip (start-up, handshakes, discovery included)
    stalls: int = 0  # requests that timed out (the joiner's own count)
    api: dict[str, float] = field(default_factory=dict)  # sync_api.ApiProbe.figures
    cpu: dict[str, float] = field(default_factory=dict)  # sync_cpu.figures

    @property
    def blocks_per_s(self) -> float:
        return self.blocks / self.sync_s if self.sync_s > 0 else 0.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Placement:
    """Where node processes run: all on loopback here (default), or servers at one end of an
    emulated lab link ("b") and the joiner at the other ("a"), in namespaces the lab owns."""

    lab: Any = None  # netdiag.lab.lab.Lab when a link is emulated

    def ns(self, role: str) -> str | None:
        return None if self.lab is None else str(self.lab.ns(self.node(role)))

    def node(self, role: str) -> str:
        return "b" if role == "server" else "a"

    def host(self, role: str) -> str:
        return "127.0.0.1" if self.lab is None else str(self.lab.addr(self.node(role)))

    def spawn(self, role: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        quiet: dict[str, Any] = {
            "stdout": subprocess.DEVNULL,
            "stderr": subprocess.DEVNULL,
            "env": node_env(env),
        }
        if self.lab is None:
            return subprocess.Popen(argv, **quiet)
        proc: subprocess.Popen[bytes] = self.lab.popen(self.node(role), argv, **quiet)
        return proc

    def status(self, role: str, api: int) -> dict[str, Any]:
        with NodeApi(self.ns(role), api) as client:
            return client.status()


def _wait(
    place: Placement, role: str, api: int, pred: Any, timeout_s: float, what: str
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            st = place.status(role, api)
            if pred(st):
                return st
        except OSError:
            pass
        time.sleep(0.02)
    raise CheckFailed(
        f"sync benchmark: timed out after {timeout_s:g} s waiting for {what}",
        "check `netdiag node run` starts on this machine (try a smaller --blocks)",
    )


@contextmanager
def _node(
    place: Placement,
    workdir: Path,
    role: str,
    name: str,
    peers: list[str],
    verify_workers: int = 0,
    extra_env: dict[str, str] | None = None,
) -> Iterator[tuple[str, int]]:
    p2p, api = _free_port(), _free_port()
    listen = f"{place.host(role)}:{p2p}"
    cmd = node_run_argv(
        workdir / name,
        workdir / "genesis.json",
        listen,
        f"127.0.0.1:{api}",
        peers=peers,
        log_level="warning",
    )
    # Exactly the peers asked for: servers never dial (so they never mesh through peer
    # exchange), the joiner dials only its bootstrap peers and accepts nobody.
    if role == "server":  # servers only serve: no verify workers taking the joiner's cores
        env = {"NETDIAG_NODE_TARGET_OUTBOUND": "0", "NETDIAG_NODE_VERIFY_WORKERS": "0"}
    else:
        n = str(len(peers))
        env = {
            "NETDIAG_NODE_TARGET_OUTBOUND": n,
            "NETDIAG_NODE_MAX_OUTBOUND": n,
            "NETDIAG_NODE_MAX_INBOUND": "0",
            "NETDIAG_NODE_VERIFY_WORKERS": str(verify_workers),
        }
    proc = place.spawn(role, cmd, env | (extra_env or {}))
    try:
        yield listen, api
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def _placement(rtt_ms: float, rate_bps: int = 1_000_000_000) -> Iterator[Placement]:
    if rtt_ms <= 0:
        yield Placement()
        return
    from netdiag.lab.lab import Lab
    from netdiag.lab.topology import two_node

    # Namespaces nd-sync-a / nd-sync-b (lab "sync"); the lab removes them and our processes in
    # them on exit and on Ctrl-C; `netdiag lab down sync` after a kill -9.
    topo = two_node(rtt_ms / 1000, rate_bps, name="sync")
    with Lab.up(topo) as lab:
        yield Placement(lab)


def run(
    blocks: int,
    peer_counts: list[int],
    rounds: int,
    rtt_ms: float = 0.0,
    progress: Callable[[str], None] = lambda _m: None,
    verify_workers: int = -1,
    lock_db_s: float = 0.0,
) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="nd-bench-sync-") as tmp,
        _placement(rtt_ms) as place,
    ):
        work = Path(tmp)
        t0 = time.perf_counter()
        progress(f"building a chain of {blocks} blocks")
        spec, keys = testkit.past_genesis(
            blocks, "bench-sync", "nd-bench", slot_ms=SLOT_MS, out=work
        )
        chain = testkit.build_chain(spec, keys, blocks)
        seeded = work / "seed"
        testkit.seed_store(seeded, spec, chain)
        build_s = time.perf_counter() - t0
        n_servers = max(peer_counts)
        for i in range(n_servers):
            (work / f"server{i}").mkdir()
            shutil.copy(seeded / "chain.sqlite", work / f"server{i}" / "chain.sqlite")
        engine = None if place.lab is None else str(place.lab.metadata()["engine"])
        per_round: list[dict[str, float]] = []
        ceilings: list[float] = []
        runs: dict[int, list[SyncRun]] = {k: [] for k in peer_counts}
        progress(f"starting {n_servers} serving nodes")
        with _servers(place, work, n_servers, blocks) as ports:
            for r in range(rounds):
                figures: dict[str, float] = {}
                progress(f"round {r + 1}/{rounds}: verify ceiling (in process)")
                ceiling = testkit.verify_ceiling(spec, chain, work)
                ceilings.append(ceiling)
                figures["verify_ceiling_blocks_per_s"] = round(ceiling, 1)
                for k in peer_counts:
                    progress(f"round {r + 1}/{rounds}: a joiner syncs from {k} peer(s)")
                    name = f"joiner-r{r}-p{k}"
                    one = _join(place, work, name, ports[:k], blocks, verify_workers, lock_db_s)
                    runs[k].append(one)
                    figures[f"p{k}_blocks_per_s"] = round(one.blocks_per_s, 1)
                    figures[f"p{k}_stalls"] = one.stalls
                    figures[f"p{k}_blocks_by_parallel_sync"] = one.blocks
                    figures.update({f"p{k}_{key}": v for key, v in one.api.items()})
                    figures.update({f"p{k}_{key}": v for key, v in one.cpu.items()})
                base = figures[f"p{peer_counts[0]}_blocks_per_s"]
                for k in peer_counts:
                    figures[f"p{k}_speedup"] = round(figures[f"p{k}_blocks_per_s"] / base, 3)
                    figures[f"p{k}_of_ceiling"] = round(figures[f"p{k}_blocks_per_s"] / ceiling, 3)
                per_round.append(figures)
    base_k = peer_counts[0]
    results: dict[str, Any] = {}
    for k in peer_counts:
        rs = runs[k]
        results[str(k)] = {
            "peers": k,
            "blocks_per_s": round(statistics.median(x.blocks_per_s for x in rs), 1),
            "sync_s": round(statistics.median(x.sync_s for x in rs), 3),
            "wall_s": round(statistics.median(x.wall_s for x in rs), 3),
            "speedup_vs_baseline": round(
                statistics.median(p[f"p{k}_speedup"] for p in per_round), 3
            ),
            "fraction_of_verify_ceiling": round(
                statistics.median(p[f"p{k}_of_ceiling"] for p in per_round), 3
            ),
            **{  # the joiner's API while it committed, beside the same API idle (medians)
                key: round(statistics.median(x.api[key] for x in rs), 2)
                for key in API_SUMMARY
                if all(key in x.api for x in rs)
            },
            **{  # CPU per block and cores used while it synced (sync_cpu.py), medians
                key: round(statistics.median(x.cpu[key] for x in rs), 2)
                for key in CPU_SUMMARY
                if all(key in x.cpu for x in rs)
            },
        }
    return {
        "blocks": blocks,
        "peer_counts": peer_counts,
        "rtt_ms": rtt_ms,
        "verify_workers": verify_workers,
        "baseline_peers": base_k,
        "chain_build_s": round(build_s, 3),
        "verify_ceiling_blocks_per_s": round(statistics.median(ceilings), 1),
        "results": results,
        "rounds": per_round,
        "host_cpus": os.cpu_count(),
        "link_engine": engine,
    }


@contextmanager
def _servers(
    place: Placement,
    work: Path,
    n: int,
    height: int,
    env: dict[str, str] | None = None,
    last_env: dict[str, str] | None = None,
    last: int = 0,
) -> Iterator[list[str]]:
    """``n`` servers with ``env``; the last ``last`` of them with ``last_env`` added."""
    envs = [(env or {}) | (last_env or {} if i >= n - last else {}) for i in range(n)]
    with _nested(place, work, envs) as nodes:
        for _, api in nodes:
            _wait(place, "server", api, lambda st: st["height"] == height, 30, "a server")
        yield [addr for addr, _ in nodes]


@contextmanager
def _nested(
    place: Placement, work: Path, envs: list[dict[str, str]]
) -> Iterator[list[tuple[str, int]]]:
    n = len(envs)
    if n == 0:
        yield []
        return
    with (
        _nested(place, work, envs[:-1]) as rest,
        _node(place, work, "server", f"server{n - 1}", [], extra_env=envs[-1]) as mine,
    ):
        yield [*rest, mine]


class DbLock:
    """Another connection's exclusive transaction on the joiner's database, held for
    ``seconds`` from ``start()`` (on a thread), as an operator's backup or a stuck tool would."""

    def __init__(self, path: Path, seconds: float) -> None:
        self.path, self.seconds = path, seconds
        self.started = self.done = False

    def start(self) -> None:
        self.started = True
        threading.Thread(target=self._hold, daemon=True).start()

    @property
    def held(self) -> bool:
        return self.started and not self.done

    def _hold(self) -> None:
        con = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
        try:
            con.execute("BEGIN EXCLUSIVE")
            time.sleep(self.seconds)
            con.execute("ROLLBACK")
        finally:
            con.close()
            self.done = True


def _join(
    place: Placement,
    work: Path,
    name: str,
    peers: list[str],
    blocks: int,
    verify_workers: int,
    lock_db_s: float = 0.0,
) -> SyncRun:
    t0 = time.perf_counter()
    lock = DbLock(work / name / "chain.sqlite", lock_db_s)
    with _node(place, work, "joiner", name, peers, verify_workers) as (_, api):
        probe = ApiProbe(lambda: NodeApi(place.ns("joiner"), api, timeout_s=30.0), name.encode())
        timeout_s = max(60.0, blocks / 100)
        st: dict[str, Any] | None = None
        snaps: list[CpuSnap] = []  # CPU per role: once while syncing, once at the tip
        while time.perf_counter() - t0 < timeout_s:
            syncing = 0 < (st or {}).get("height", 0) < blocks
            if syncing and lock_db_s and not lock.started:
                lock.start()
            try:  # timed while blocks commit (height up from 0, below the tip)
                got = probe.poll(
                    ("locked" if lock.held else "sync") if syncing or lock.held else "start"
                )
            except OSError:
                time.sleep(0.02)
                continue
            if (not snaps and 0 < got["height"] < blocks) or (
                got["height"] == blocks and len(snaps) < 2
            ):
                snaps.append(CpuSnap(time.perf_counter(), got["height"], role_cpu_s(work, name)))
            if got["height"] == blocks and got["sync"]["last_catch_up_s"] is not None:
                st = got
                break
            st = got
            time.sleep(0.02)
        if st is None or st["height"] != blocks:
            raise CheckFailed(
                f"sync benchmark: timed out after {timeout_s:g} s waiting for a joiner with "
                f"{len(peers)} peers to reach {blocks}",
                "check `netdiag node run` starts on this machine (try a smaller --blocks)",
            )
        wall = time.perf_counter() - t0
        probe.idle(40)
    sync = st["sync"]
    if st["peers"] != len(peers):
        raise CheckFailed(
            f"sync benchmark: the joiner had {st['peers']} peers, not {len(peers)}",
            "report this: the peer count of a run must be exactly the one asked for",
        )
    shutil.rmtree(work / name, ignore_errors=True)
    return SyncRun(
        len(peers),
        int(sync["blocks_committed"]),
        float(sync["last_catch_up_s"]),
        wall,
        int(sync["stalls"]),
        probe.figures(),
        cpu_figures(*snaps) if len(snaps) == 2 else {},
    )


def to_result(fig: dict[str, Any], parameters: dict[str, Any]) -> ResultBuilder:
    """summary.sync: one row per peer count (key `case`: "2 peers"); summary.ceiling: the
    in-process verify ceiling and chain build time; raw.rounds: per-round figures."""
    res = output.new("sync", parameters, link_engine=fig.get("link_engine"))
    for k, r in fig["results"].items():
        res.add_summary("sync", {"case": f"{k} peer{'s' if int(k) > 1 else ''}", **r})
    res.add_summary(
        "ceiling",
        {
            "verify_ceiling_blocks_per_s": fig["verify_ceiling_blocks_per_s"],
            "chain_build_s": fig["chain_build_s"],
            "baseline_peers": fig["baseline_peers"],
        },
    )
    for i, r in enumerate(fig["rounds"], start=1):
        res.record("rounds", {"round": i, **r})
    return res
