"""`bench p2p`'s cluster driver: the run's parameters and state, and the node processes it
starts, stops, waits for and queries in parallel. The phases (p2p_load, p2p_syncphase,
p2p_figures) build on it; p2p.P2PBench drives them variant by variant."""

from __future__ import annotations

import contextlib
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from netdiag.bench import p2p_topology
from netdiag.bench.p2p_poster import TxPoster
from netdiag.bench.p2p_topology import ClusterGraph
from netdiag.diagnose import Sample
from netdiag.errors import InputError, NetdiagError
from netdiag.lab.cluster import (
    NodeRun,
    node_env,
    tail,
)
from netdiag.nodeapi import (
    NodeUnavailable,
)
from netdiag.report.results import ResultBuilder

T = TypeVar("T")


@dataclass(frozen=True)
class P2PParams:
    nodes: int = 16
    topology: str = "regular"
    degree: int = 4
    profile: str = "wan"
    rate_bps: int | None = None  # overrides the profile
    loss: float | None = None  # overrides the profile
    tx_rate: float = 20.0  # transactions per second, whole cluster
    duration_s: float = 30.0  # load phase per variant
    slot_ms: int = 1000
    cc: tuple[str, ...] = ("bbr",)
    rounds: int = 1  # cc variants alternate this many times (cubic, bbr, cubic, bbr, …)
    seed: int = 1
    engine: str = "auto"
    tx_bytes: int = 256  # payload per transaction: larger payloads make sync move real bytes
    tx_sample_every: int = 5  # follow every k-th transaction to every node
    settle_s: float = 4.0  # wait after a message before asking every node about it
    sync_gap_s: float = 5.0  # how long the restart victim stays down
    sync_timeout_s: float = 90.0
    tls: bool = True
    kill: int = 0  # validators killed with SIGKILL at mid-load and not restarted
    partition_s: float = 0.0  # cut the cluster in two halves for this long at mid-load
    lossy_link: str | None = None  # "n01-n02:5%": one link gets this loss for the whole run
    byzantine: bool = False  # a validator next to the late joiner serves forged sync segments
    discovery: bool = False  # one bootstrap per node, the mesh from Kademlia (not the graph)
    node_settings: tuple[tuple[str, str], ...] = ()  # NETDIAG_NODE_<KEY>=VALUE, every node

    def link_profile(self) -> p2p_topology.LinkProfile:
        try:
            base = p2p_topology.PROFILES[self.profile]
        except KeyError:
            raise InputError(
                f"link profile {self.profile!r} is unknown",
                f"use one of {', '.join(p2p_topology.PROFILES)}",
            ) from None
        return p2p_topology.LinkProfile(
            base.name,
            self.rate_bps if self.rate_bps is not None else base.rate_bps,
            self.loss if self.loss is not None else base.loss,
            base.queue,
        )


@dataclass
class Progress:
    """What the bench is doing, for the rich progress line (the CLI renders it)."""

    variant: str = ""
    phase: str = "setup"
    nodes_up: int = 0
    nodes_total: int = 0
    txs_sent: int = 0  # accepted by a node (POST /tx answered accepted)
    txs_offered: int = 0  # POSTs attempted (the load the generator managed to offer)
    height: int = 0
    phase_end: float | None = None  # monotonic time the phase should end

    def time_left_s(self) -> float | None:
        return None if self.phase_end is None else max(0.0, self.phase_end - time.monotonic())


Reporter = Callable[[Progress], None]


@dataclass
class Pending:
    kind: str  # block | tx
    mid: str
    origin: str
    seen_at: float  # monotonic, when the bench learnt of it
    label: str  # height or short txid
    size_bytes: int = 0  # on the wire (a block's encoding; a tx's payload): 0 if unknown


class ClusterDriver:
    def __init__(
        self, params: P2PParams, report: Reporter | None = None, work_root: Path | None = None
    ) -> None:
        if params.nodes < 4:
            raise InputError(
                f"--nodes {params.nodes} is too small for bench p2p",
                "use at least 4 (validators + a late joiner + a restart victim)",
            )
        self._init_run(params, report, work_root, list(p2p_topology.node_names(params.nodes)))
        self.late_joiner, self.victim = self.names[-1], self.names[-2]
        self.validators = self.names[:-2]
        self.graph: ClusterGraph = p2p_topology.build(
            params.nodes,
            params.topology,
            params.degree,
            params.seed,
            keep_connected_without=(self.late_joiner, self.victim),
        )
        # --byzantine: a validator next to the late joiner serves forged sync segments
        near = [n for n in self.validators if n in self.graph.neighbours(self.late_joiner)]
        if params.byzantine and not near:
            raise InputError(
                f"--byzantine: the late joiner {self.late_joiner} has no validator neighbour "
                "to act as the forger",
                "raise --degree or change --seed",
            )
        self.forger = near[-1] if near else ""

    def _init_run(
        self, params: P2PParams, report: Reporter | None, work_root: Path | None, names: list[str]
    ) -> None:
        """The state of a run, whoever started its nodes (the lab, or a deployment)."""
        self.p = params
        self.report = report or (lambda _p: None)
        self.progress = Progress(nodes_total=len(names))
        self.rng = random.Random(params.seed)
        self.names = names
        # the nodes share this host's CLOCK_MONOTONIC (lab nodes): first-seen times are exact;
        # nodes elsewhere are timed by the age they report, within half the request's RTT
        self.same_clock = True
        self.work_root = work_root
        self.result = ResultBuilder(
            "p2p", _params_dict(params), seed=params.seed, variants=list(params.cc)
        )
        self.notes: list[str] = []
        self.round = 1
        # the last sock_diag sample per (node, socket): each transport row carries the verdict
        # engine's judgement of the window since the previous one
        self.prev_sample: dict[tuple[str, int], Sample] = {}
        self.cpu_split: dict[str, float] = {}
        self.skipped: Counter[tuple[str, str]] = Counter()  # messages not followed, by reason
        # REST and sock_diag queries are I/O: a pool keeps a tick short on large clusters
        self.pool = ThreadPoolExecutor(max_workers=min(16, len(names)), thread_name_prefix="p2p")
        self.lab: Any = None  # the running Lab (set by run())
        self._loss_override: dict[frozenset[str], float] = {}  # --lossy-link, kept over heals
        # --discovery: kad_lookup_seconds / kad_lookup_hops buckets pooled per variant
        self.kad_buckets: dict[str, tuple[dict[float, float], dict[float, float]]] = {}
        self.poster: TxPoster | None = None  # the variant's load generator

    def _each(self, runs: list[NodeRun], fn: Callable[[NodeRun], T]) -> dict[str, T | None]:
        """fn(node) on every live node in parallel (one task per node, so each node's client is
        used by one thread at a time); a node that does not answer maps to None."""

        def safe(r: NodeRun) -> T | None:
            try:
                return fn(r)
            except (NodeUnavailable, OSError, ValueError, KeyError, TypeError):
                return None

        live = [r for r in runs if self._alive(r)]
        return dict(zip([r.name for r in live], self.pool.map(safe, live), strict=True))

    def _phase(self, phase: str, seconds: float | None = None) -> None:
        self.progress.phase = phase
        self.progress.phase_end = None if seconds is None else time.monotonic() + seconds
        self.report(self.progress)

    def _start(self, lab: Any, r: NodeRun, genesis: Path) -> None:
        r.data_dir.mkdir(parents=True, exist_ok=True)
        log = r.data_dir.parent.parent / f"{r.name}.log"
        argv = r.argv(genesis, lab.addr(r.name), self.p.tls)
        r.proc = lab.popen(r.name, argv, log=log, kind="node", env=node_env(r.env))
        r.api = None

    def _stop(self, r: NodeRun, sig: int = signal.SIGTERM) -> None:
        if r.api is not None:
            r.api.close()
            r.api = None
        if r.proc is None or r.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            r.proc.send_signal(sig)
        try:
            r.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            r.proc.kill()
            r.proc.wait(timeout=5)

    def _alive(self, r: NodeRun) -> bool:
        return r.proc is not None and r.proc.poll() is None

    def _wait_cluster(self, runs: list[NodeRun], deadline: float) -> None:
        """All nodes answer /status and have at least one peer (the mesh needs a moment more)."""
        pending = {r.name for r in runs}
        while pending and time.monotonic() < deadline:
            for r in runs:
                if r.name not in pending:
                    continue
                if not self._alive(r):
                    raise NetdiagError(
                        f"node {r.name} exited during start-up (exit "
                        f"{r.proc.returncode if r.proc else '?'})",
                        "see its log under the lab's work dir; rerun with --debug",
                    )
                with contextlib.suppress(NodeUnavailable):
                    st = r.client().get_json("/status")
                    if st and int(st.get("peers", 0)) >= 1:
                        pending.discard(r.name)
            self.progress.nodes_up = len(runs) - len(pending)
            self.report(self.progress)
            time.sleep(0.3)
        if pending:
            tails = "; ".join(
                f"{r.name}: {tail(r.data_dir.parent.parent / f'{r.name}.log')}"
                for r in runs
                if r.name in pending
            )
            raise NetdiagError(
                f"nodes {', '.join(sorted(pending))} did not join the cluster within 60 s "
                f"(log tails: {tails})",
                "check the node logs; a smaller --nodes may help",
            )
        time.sleep(2 * 1.0)  # two gossip heartbeats: the mesh grafts its peers

    def _rtag(self) -> str:
        return f" r{self.round}" if self.p.rounds > 1 else ""


def _mean(values: Any) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return round(sum(vals) / len(vals), 2) if vals else None


def _retry(fn: Callable[[], Any], tries: int = 5, pause_s: float = 1.0) -> Any:
    """A node's API may time out on a loaded host: ask again before giving up."""
    for i in range(tries):
        try:
            return fn()
        except NodeUnavailable as e:
            if i == tries - 1:
                raise NetdiagError(
                    f"node API did not answer after {tries} tries: {e}",
                    "the host is overloaded: fewer --nodes, or stop other jobs",
                ) from e
            time.sleep(pause_s)
    raise AssertionError("unreachable")


def _first_seen(
    rec: dict[str, Any], t0: float, t1: float, same_clock: bool = True
) -> tuple[float, int, float]:
    """When a node first saw a message, on this host's CLOCK_MONOTONIC.

    The node reports the absolute time (`first_seen_monotonic_ns`, exact when it runs on this
    host: `same_clock`) and its age at the moment it answered (`first_seen_age_s`); for the age,
    that moment lies between our send (t0) and receive (t1), so the midpoint is used and half
    the round trip is the error bound (an NTP-style offset per answer: no clock is shared).
    """
    dups = int(rec.get("duplicates", 0))
    if same_clock and "first_seen_monotonic_ns" in rec:
        return int(rec["first_seen_monotonic_ns"]) / 1e9, dups, 0.0
    return (t0 + t1) / 2 - float(rec["first_seen_age_s"]), dups, (t1 - t0) / 2


def _params_dict(p: P2PParams) -> dict[str, Any]:
    d = asdict(p)
    d["cc"] = list(p.cc)
    prof = p.link_profile()
    d["link_rate_bps"], d["link_loss"] = prof.rate_bps, prof.loss
    return d
