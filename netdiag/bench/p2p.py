"""`netdiag bench p2p`: a node cluster on emulated WAN links, loaded, measured, one result file.

Per variant (congestion control, alternating with the same seed and the same lab):
  1. every namespace's ``net.ipv4.tcp_congestion_control`` is set to the variant;
  2. a fresh genesis (``netdiag node genesis``) and fresh data dirs; validators are all nodes but
     the last two — the late joiner (started only in the sync phase) and the restart victim;
  3. **load**: signed transactions POSTed at ``tx_rate`` round-robin over the nodes while the
     validators produce a block per slot. Each block and every k-th transaction is followed to
     every node through ``/message/{id}`` (first-seen time on the host's one monotonic clock,
     duplicate count); sock_diag samples every peer socket each second, joined to ``/peers``
     by socket cookie;
  4. **sync**: the late joiner starts; the restart victim is killed with SIGKILL, left down for
     ``sync_gap_s`` and restarted; both are polled until ``synchronized``.
The bench talks to nodes only through their process, REST API and wire format (netdiag.nodeapi).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from netdiag.bench import p2p_stats, p2p_topology
from netdiag.bench.p2p_cc import check_cc, namespace_cc
from netdiag.bench.p2p_topology import ClusterGraph
from netdiag.diagnose import Sample, judge_samples
from netdiag.errors import InputError, NetdiagError
from netdiag.lab.cluster import (
    API_PORT,
    P2P_PORT,
    NodeRun,
    cpu_s,
    make_genesis,
    node_env,
    pids_cpu_s,
    tail,
)
from netdiag.nodeapi import (
    NodeApi,
    NodeUnavailable,
    Peer,
    TxSigner,
    block_message_id,
    metric_sum,
    parse_metrics,
    peers_by_sock_cookie,
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


class P2PBench:
    def __init__(
        self, params: P2PParams, report: Reporter | None = None, work_root: Path | None = None
    ) -> None:
        self.p = params
        self.report = report or (lambda _p: None)
        self.progress = Progress(nodes_total=params.nodes)
        self.rng = random.Random(params.seed)
        self.names = p2p_topology.node_names(params.nodes)
        if params.nodes < 4:
            raise InputError(
                f"--nodes {params.nodes} is too small for bench p2p",
                "use at least 4 (validators + a late joiner + a restart victim)",
            )
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
        self.pool = ThreadPoolExecutor(max_workers=min(16, params.nodes), thread_name_prefix="p2p")

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

    # -- top level ---------------------------------------------------------------------------
    def run(self) -> ResultBuilder:
        from netdiag.lab import Lab

        check_cc(self.p.cc)  # tune allows it in the namespaces when needed
        profile = self.p.link_profile()
        lab_name = f"p2p{self.p.seed % 1000}{os.getpid() % 10000}"[:16]
        topo = p2p_topology.to_lab(self.graph, lab_name, profile, self.p.seed, self.p.engine)
        work = Path(tempfile.mkdtemp(prefix="netdiag-p2p-", dir=self.work_root))
        self._phase("building lab")
        try:
            with Lab.up(topo) as lab:
                self.lab = lab
                meta = lab.metadata()
                self.result.link_engine = str(meta.get("engine"))
                self.result.metadata.update(
                    lab=meta,
                    topology={
                        "shape": self.p.topology,
                        "degree": self.p.degree,
                        "edges": [list(e) for e in self.graph.edges],
                    },
                    roles={
                        "validators": list(self.validators),
                        "late_joiner": self.late_joiner,
                        "restart_victim": self.victim,
                        "forger": self.forger if self.p.byzantine else None,
                    },
                )
                self._apply_lossy_link(lab)
                for rnd in range(1, self.p.rounds + 1):
                    self.round = rnd
                    for variant in self.p.cc:
                        self.run_variant(lab, variant, work / f"{variant}-{rnd}")
                for variant in self.p.cc:
                    self._summarise(variant)
        finally:
            self.pool.shutdown(wait=True)
            shutil.rmtree(work, ignore_errors=True)
        self.result.metadata["notes"] = self.notes
        return self.result

    def _phase(self, phase: str, seconds: float | None = None) -> None:
        self.progress.phase = phase
        self.progress.phase_end = None if seconds is None else time.monotonic() + seconds
        self.report(self.progress)

    def _apply_lossy_link(self, lab: Any) -> None:
        if not self.p.lossy_link:
            return
        spec, _, loss_text = self.p.lossy_link.partition(":")
        a, _, b = spec.partition("-")
        from netdiag.lab.units import loss_fraction

        loss = loss_fraction(loss_text or "5%", "--lossy-link")
        lab.set_link(a, b, loss=loss)
        self._loss_override = {frozenset((a, b)): loss}  # a healed partition restores it
        self.notes.append(f"lossy link {a}-{b}: loss {loss * 100:g}% for the whole run")

    # -- one variant -------------------------------------------------------------------------
    def run_variant(self, lab: Any, variant: str, work: Path) -> None:
        self.progress.variant = variant
        self.progress.txs_sent = 0
        self.progress.txs_offered = 0
        self._phase("congestion control")
        with namespace_cc([lab.ns(n) for n in self.names], variant, self.notes):
            self._variant_in_cc(lab, variant, work)

    def _variant_in_cc(self, lab: Any, variant: str, work: Path) -> None:
        self._phase("genesis")
        gen = make_genesis(work / "genesis", len(self.validators), str(self.p.seed), self.p.slot_ms)
        genesis = gen.path
        producer_of = {k: self.validators[i] for i, k in enumerate(gen.node_ids)}
        runs = {
            n: NodeRun(
                n,
                lab.ns(n),
                work / "data" / n,
                gen.keys[i] if n in self.validators else None,
                [f"{lab.addr(m)}:{P2P_PORT}" for m in self.graph.neighbours(n)],
            )
            for i, n in enumerate(self.names)
        }
        runs[self.late_joiner].in_load = False
        if self.p.byzantine:
            # LAB ONLY node hook: the forger serves every block it is asked for in a range forged;
            # it is the late joiner's only bootstrap peer, so the joiner's first sync request
            # goes to it (the joiner learns honest peers through the forger's peer exchange)
            forger = runs[self.forger]
            forger.env = {"NETDIAG_NODE_DEBUG_FORGE_SYNC_FROM": "1"}
            runs[self.late_joiner].peers = [f"{lab.addr(forger.name)}:{P2P_PORT}"]
        t0 = time.monotonic()
        try:
            self._phase("starting nodes", 30)
            for n, r in runs.items():
                if n != self.late_joiner:
                    self._start(lab, r, genesis)
            self._wait_cluster([r for r in runs.values() if r.in_load], deadline=t0 + 60)
            self._load(lab, variant, runs, producer_of, t0)
            self._sync(lab, variant, runs, genesis)
        finally:
            self._phase("stopping nodes")
            for r in runs.values():
                self._stop(r)
        for s in lab.crashed():
            if s.proc.returncode not in (-signal.SIGKILL, -signal.SIGTERM, 0):
                self.notes.append(
                    f"{variant}: node {s.node} exited with {s.proc.returncode}: {s.tail(3)}"
                )

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

    # -- load phase ---------------------------------------------------------------------------
    def _load(
        self,
        lab: Any,
        variant: str,
        runs: dict[str, NodeRun],
        producer_of: dict[str, str],
        t0: float,
    ) -> None:
        p = self.p
        active = [r for r in runs.values() if r.in_load]
        one_way = self.graph.one_way_s(frozenset({self.late_joiner}))
        for r in active:
            r.cpu_start_s = cpu_s(r)
            with contextlib.suppress(NodeUnavailable):
                r.metrics_start = parse_metrics(r.client().metrics_text())
        # where a large cluster breaks: the link emulator, the nodes, or this bench itself
        fwd_cpu0, own_cpu0 = pids_cpu_s(lab.forwarder_pids()), pids_cpu_s([os.getpid()])
        ref = active[0]
        by_name = {r.name: r for r in active}
        network_id = str(_retry(lambda: ref.client().get_json("/status"))["network_id"])
        start_height = max(self._sample_status(variant, active, 0.0).values(), default=0)
        tracked: list[Pending] = []
        tx_lock = threading.Lock()
        stop = threading.Event()
        killed: set[str] = set()

        def poster() -> None:
            signer = TxSigner(f"bench-p2p:{p.seed}:{variant}".encode())
            clients = {r.name: NodeApi(r.ns, API_PORT) for r in active}
            order = itertools.cycle(sorted(clients))
            interval = 1.0 / p.tx_rate
            next_t = time.monotonic()
            i = 0
            while not stop.is_set():
                node = next(order)
                if node in killed:
                    continue
                body, _txid = signer.next_tx(os.urandom(p.tx_bytes))
                self.progress.txs_offered += 1
                with contextlib.suppress(NodeUnavailable):
                    got = clients[node].post_tx(body)
                    if got is not None:
                        i += 1
                        self.progress.txs_sent = i
                        if i % p.tx_sample_every == 0:
                            with tx_lock:
                                tracked.append(Pending("tx", got, node, time.monotonic(), got[:12]))
                next_t += interval
                delay = next_t - time.monotonic()
                if delay > 0:
                    stop.wait(delay)
                elif delay < -1.0:
                    next_t = time.monotonic()  # we fell behind by > 1 s: do not burst
            for c in clients.values():
                c.close()

        self._phase("load", p.duration_s)
        load_t0 = time.monotonic()
        thread = threading.Thread(target=poster, name="p2p-tx-poster", daemon=True)
        thread.start()
        next_height = start_height + 1
        pending: list[Pending] = []
        peers_cache: dict[str, dict[int, Peer]] = {}
        fault_at = load_t0 + p.duration_s / 2
        faults_done = False
        heal_at: float | None = None
        try:
            tick = 0
            while time.monotonic() - load_t0 < p.duration_s:
                tick_start = time.monotonic()
                t_s = tick_start - load_t0
                heights = self._sample_status(variant, active, t_s)
                self.progress.height = max(heights.values(), default=0)
                # follow the longest chain: a node stuck on a fork must not hide the others' blocks
                best = max(heights, key=lambda n: heights[n], default=ref.name)
                top = heights.get(best, 0)
                while next_height <= top:
                    try:
                        blk = by_name[best].client().get_json(f"/block/{next_height}")
                    except NodeUnavailable:  # a busy node: try this height on the next tick
                        break
                    if blk is not None:
                        origin = producer_of.get(str(blk.get("producer")), "")
                        pending.append(
                            Pending(
                                "block",
                                block_message_id(blk, network_id),
                                origin,
                                time.monotonic(),
                                str(next_height),
                            )
                        )
                    next_height += 1
                with tx_lock:
                    pending.extend(tracked)
                    tracked.clear()
                if tick % 5 == 0:
                    peers_cache = self._peers(active)
                self._sample_transport(variant, active, peers_cache, t_s)
                pending = self._resolve(variant, active, pending, one_way, killed, final=False)
                if not faults_done and time.monotonic() >= fault_at:
                    faults_done = True
                    heal_at = self._inject_faults(lab, variant, active, killed)
                if heal_at is not None and time.monotonic() >= heal_at:
                    self._heal(lab)
                    heal_at = None
                tick += 1
                self.report(self.progress)
                time.sleep(max(0.0, 1.0 - (time.monotonic() - tick_start)))
        finally:
            stop.set()
            thread.join(timeout=10)
            if heal_at is not None:
                self._heal(lab)
        load_s = time.monotonic() - load_t0
        for r in active:  # CPU of the load phase only: read before settling
            r.cpu_end_s = cpu_s(r)
        self.cpu_split = {
            "forwarders_cpu_pct": round(
                (pids_cpu_s(lab.forwarder_pids()) - fwd_cpu0) / load_s * 100, 1
            ),
            "bench_cpu_pct": round((pids_cpu_s([os.getpid()]) - own_cpu0) / load_s * 100, 1),
            "host_load_avg_1m": round(os.getloadavg()[0], 2),
        }
        self._phase("settling", p.settle_s)
        time.sleep(p.settle_s)
        self._resolve(variant, active, pending, one_way, killed, final=True)
        for r in active:
            with contextlib.suppress(NodeUnavailable):
                r.metrics_end = parse_metrics(r.client().metrics_text())
        self._record_round(variant, active, load_s)
        self._check_agreement(variant, active)
        for (v, why), n in sorted(self.skipped.items()):
            if v == variant:
                self.notes.append(f"{variant}: {n} messages not followed ({why})")

    def _sample_status(self, variant: str, runs: list[NodeRun], t_s: float) -> dict[str, int]:
        got = self._each(runs, lambda r: r.client().get_json("/status"))
        heights = {n: int(st["height"]) for n, st in got.items() if st}
        for n, h in heights.items():
            self.result.sample(
                f"height {n} {variant}{self._rtag()}",
                t_s,
                h,
                metric="height",
                node=n,
                variant=variant,
            )
        self.progress.nodes_up = len(heights)
        return heights

    def _peers(self, runs: list[NodeRun]) -> dict[str, dict[int, Peer]]:
        def one(r: NodeRun) -> dict[int, Peer]:
            return peers_by_sock_cookie(r.client().peers())

        return {n: v for n, v in self._each(runs, one).items() if v is not None}

    def _sample_transport(
        self,
        variant: str,
        runs: list[NodeRun],
        peers: dict[str, dict[int, Peer]],
        t_s: float,
    ) -> None:
        from netdiag.measure import sockdiag

        addr_to_node = {self.lab.addr(n): n for n in self.names}
        snaps = self._each(runs, lambda r: sockdiag.snapshot(r.ns, ports=[P2P_PORT]))
        for r in runs:
            for c in snaps.get(r.name) or []:
                if c.info is None or c.state != "ESTABLISHED":
                    continue
                peer_node = addr_to_node.get(c.raddr, c.raddr)
                peer = peers.get(r.name, {}).get(c.cookie)
                now = Sample(time.monotonic(), c)
                prev = self.prev_sample.get((r.name, c.cookie))
                self.prev_sample[(r.name, c.cookie)] = now
                verdict = judge_samples([prev, now]).verdict if prev is not None else None
                row: dict[str, str | int | float | bool | None] = {
                    "variant": variant,
                    "round": self.round,
                    "t_s": round(t_s, 3),
                    "node": r.name,
                    "peer_node": peer_node,
                    "peer_id": str(peer.get("peer_id", ""))[:16] or None if peer else None,
                    "sock_cookie": c.cookie,
                    "cc": c.cc,
                    "srtt_us": c.info.rtt_us,
                    "min_rtt_us": c.info.min_rtt_us,
                    "cwnd_segs": c.info.snd_cwnd,
                    "retrans_total": c.info.total_retrans,
                    "bytes_acked": c.info.bytes_acked,
                    "delivery_rate_bps": c.info.delivery_rate_bps,
                    "verdict": verdict,
                }
                self.result.record("transport", row)
                link = f"{r.name}>{peer_node}"
                labels: dict[str, str | int] = {
                    "link": link,
                    "variant": variant,
                    "node": r.name,
                    "round": self.round,
                }
                self.result.sample(
                    f"srtt_us {link} {variant}{self._rtag()}",
                    t_s,
                    c.info.rtt_us,
                    metric="srtt_us",
                    **labels,
                )
                self.result.sample(
                    f"cwnd_segs {link} {variant}{self._rtag()}",
                    t_s,
                    c.info.snd_cwnd,
                    metric="cwnd_segs",
                    **labels,
                )

    def _resolve(
        self,
        variant: str,
        runs: list[NodeRun],
        pending: list[Pending],
        one_way: dict[str, dict[str, float]],
        killed: set[str],
        final: bool,
    ) -> list[Pending]:
        """Ask every node about messages old enough to have spread; keep the others."""
        now = time.monotonic()
        ready = [m for m in pending if final or now - m.seen_at >= self.p.settle_s]
        keep = [m for m in pending if m not in ready]
        if not ready:
            return keep

        def ask(r: NodeRun) -> dict[str, tuple[float, int, float] | None]:
            """mid -> (first seen on the host's monotonic clock, duplicates, ± error in s)."""
            out: dict[str, tuple[float, int, float] | None] = {}
            for m in ready:
                best: tuple[float, int, float] | None = None
                # NTP-style: a busy node answers late and widens the error; ask again (up to
                # 3 times) while the error exceeds 2 ms and keep the answer with the smallest
                for _ in range(3):
                    try:
                        t0 = time.monotonic()
                        rec = r.client().get_json(f"/message/{m.mid}")
                        t1 = time.monotonic()
                    except NodeUnavailable:
                        break
                    if rec is None:
                        break
                    got = _first_seen(rec, t0, t1)
                    if best is None or got[2] < best[2]:
                        best = got
                    if best[2] <= 0.002:
                        break
                out[m.mid] = best
            return out

        seen = self._each([r for r in runs if r.name not in killed], ask)
        for m in ready:
            if m.origin in killed or m.origin not in seen:
                # its publish time died with it; counted, not guessed
                self.skipped[(variant, "origin killed or down")] += 1
                continue
            rec0 = (seen[m.origin] or {}).get(m.mid)
            if rec0 is None:
                self.skipped[(variant, "origin does not know it")] += 1
                continue
            t_pub, _, err0 = rec0
            for r in runs:
                if r.name == m.origin or r.name in killed:
                    continue
                rec = (seen.get(r.name) or {}).get(m.mid)
                self.result.record(
                    "propagation",
                    {
                        "variant": variant,
                        "round": self.round,
                        "kind": m.kind,
                        "msg": m.label,
                        "node": r.name,
                        "origin": m.origin,
                        "delay_us": round((rec[0] - t_pub) * 1e6, 1) if rec else None,
                        "lower_bound_us": p2p_stats.lower_bounds_us(one_way, m.origin, r.name),
                        "duplicates": rec[1] if rec else None,
                        "error_us": round((rec[2] + err0) * 1e6, 1) if rec else None,
                    },
                )
        return keep

    # -- faults --------------------------------------------------------------------------------
    def _inject_faults(
        self, lab: Any, variant: str, active: list[NodeRun], killed: set[str]
    ) -> float | None:
        heal_at = None
        if self.p.kill:
            victims = self.rng.sample(
                [r for r in active if r.name in self.validators],
                min(self.p.kill, len(self.validators) - 1),
            )
            for r in victims:
                if r.proc is not None:
                    r.proc.kill()  # Popen.kill: never a reaped, reused pid
                    r.proc.wait(timeout=5)
                killed.add(r.name)
            self.notes.append(f"{variant}: killed -9 at mid-load: {', '.join(sorted(killed))}")
        if self.p.partition_s > 0:
            half = set(self.names[: len(self.names) // 2])
            self._cut = [(a, b) for a, b, _ in self.graph.edges if (a in half) != (b in half)]
            for a, b in self._cut:
                lab.set_link(a, b, loss=1.0)
            self.notes.append(
                f"{variant}: partitioned {len(self._cut)} links for "
                f"{self.p.partition_s:g} s at mid-load"
            )
            heal_at = time.monotonic() + self.p.partition_s
        return heal_at

    def _heal(self, lab: Any) -> None:
        base = self.p.link_profile().loss
        overrides: dict[frozenset[str], float] = getattr(self, "_loss_override", {})
        for a, b in getattr(self, "_cut", []):
            lab.set_link(a, b, loss=overrides.get(frozenset((a, b)), base))
        self._cut = []

    # -- sync phase ----------------------------------------------------------------------------
    def _sync(self, lab: Any, variant: str, runs: dict[str, NodeRun], genesis: Path) -> None:
        """Late joiner from genesis, and the victim restarted after kill -9 and a gap, in parallel.

        A case is done when the node says `synchronized` and is within one block of the
        cluster's height (a fresh node may call itself synchronized before it has met a peer).
        """
        victim, joiner = runs[self.victim], runs[self.late_joiner]
        victim_height = 0
        with contextlib.suppress(NodeUnavailable, TypeError, KeyError):
            victim_height = int(victim.client().get_json("/status")["height"])
        self._phase("sync", self.p.sync_timeout_s)
        if victim.proc is not None:
            victim.proc.kill()  # SIGKILL via Popen: never a reaped, reused pid
            victim.proc.wait(timeout=5)
        if victim.api is not None:
            victim.api.close()
            victim.api = None
        forger_id = None
        if self.p.byzantine:
            with contextlib.suppress(NodeUnavailable, TypeError, KeyError):
                forger_id = str(runs[self.forger].client().get_json("/status")["node_id"])
        t_join = time.monotonic()
        self._start(lab, joiner, genesis)
        restart_at = t_join + self.p.sync_gap_s
        # case -> (node, start height, monotonic start or None while not started)
        cases: dict[str, tuple[NodeRun, int, float | None]] = {
            "late_join": (joiner, 0, t_join),
            "restart": (victim, victim_height, None),
        }
        done: dict[str, tuple[float, int]] = {}
        api_up: dict[str, float] = {}  # process start -> first /status answer: start-up cost
        refs = [
            r
            for r in runs.values()
            if r.name not in (self.victim, self.late_joiner) and self._alive(r)
        ]
        deadline = t_join + self.p.sync_gap_s + self.p.sync_timeout_s
        while len(done) < len(cases) and time.monotonic() < deadline:
            if cases["restart"][2] is None and time.monotonic() >= restart_at:
                self._start(lab, victim, genesis)
                cases["restart"] = (victim, victim_height, time.monotonic())
            target = 0
            for r in refs[:3]:
                with contextlib.suppress(NodeUnavailable, TypeError, KeyError):
                    target = max(target, int(r.client().get_json("/status")["height"]))
            for case, (r, h0, t_start) in cases.items():
                if case in done or t_start is None:
                    continue
                st = None
                with contextlib.suppress(NodeUnavailable):
                    st = r.client().get_json("/status")
                t = time.monotonic() - t_start
                if st is not None:
                    api_up.setdefault(case, t)
                h = int(st["height"]) if st else h0
                synced = bool(st and st.get("synchronized")) and h >= target - 1
                self.result.record(
                    "sync",
                    {
                        "variant": variant,
                        "round": self.round,
                        "case": case,
                        "t_s": round(t, 3),
                        "height": h,
                        "target_height": target,
                        "synchronized": synced,
                    },
                )
                if synced:
                    done[case] = (t, h - h0)
            self.progress.height = target
            self.progress.nodes_up = sum(self._alive(r) for r in runs.values())
            self.report(self.progress)
            time.sleep(0.1)
        if self.p.byzantine:
            self._record_byzantine(variant, joiner, forger_id, "late_join" in done)
        for case in cases:
            got = done.get(case)
            sync_s: float | None = got[0] if got else None
            blocks: int | None = got[1] if got else None
            self.result.record(
                "sync_results",
                {
                    "variant": variant,
                    "round": self.round,
                    "case": case,
                    "sync_s": round(sync_s, 3) if sync_s is not None else None,
                    "blocks": blocks,
                    "blocks_per_s": round(blocks / sync_s, 2) if sync_s and blocks else None,
                    "api_up_s": round(api_up[case], 3) if case in api_up else None,
                    # sync time without the process start-up (interpreter, store open)
                    "sync_after_api_s": round(sync_s - api_up[case], 3)
                    if sync_s is not None and case in api_up
                    else None,
                },
            )
            if case not in done:
                self.notes.append(
                    f"{variant}: {case} did not reach synchronized within "
                    f"{self.p.sync_timeout_s:g} s"
                )

    def _record_byzantine(
        self, variant: str, joiner: NodeRun, forger_id: str | None, synced: bool
    ) -> None:
        """Did the late joiner, whose first peer served it forged blocks, sync and ban it?"""
        st: dict[str, Any] | None = None
        with contextlib.suppress(NodeUnavailable):
            st = joiner.client().get_json("/status")
        banned = list(st.get("banned_peers", [])) if st else []
        row: dict[str, Any] = {
            "variant": variant,
            "round": self.round,
            "forger": self.forger,
            "forger_id": forger_id,
            "joiner_synced": synced,
            "forger_banned_by_joiner": forger_id is not None and forger_id in banned,
            "joiner_bans": len(banned),
        }
        self.result.record("byzantine", row)
        if not row["forger_banned_by_joiner"]:
            self.notes.append(
                f"{variant}{self._rtag()}: the late joiner did not ban the forger {self.forger}"
            )

    def _tips(self, runs: list[NodeRun]) -> tuple[dict[str, int], int, set[str]]:
        """Heights of the live nodes, the lowest, and the distinct blocks they hold there."""
        got = self._each(runs, lambda r: r.client().get_json("/status"))
        heights = {n: int(st["height"]) for n, st in got.items() if st}
        if not heights:
            return {}, 0, set()
        h = min(heights.values())
        blocks = self._each(
            [r for r in runs if r.name in heights], lambda r: r.client().get_json(f"/block/{h}")
        )
        return heights, h, {str(b["hash"]) for b in blocks.values() if b}

    def _check_agreement(self, variant: str, runs: list[NodeRun]) -> None:
        """Do the live nodes hold the same block at the lowest height they all have?

        A split is checked again after a few slots: the node's fork choice may still resolve
        it (transient) — or not (persistent), which the summary counts as a fork.
        """
        heights, h, hashes = self._tips(runs)
        if not heights:
            return
        later = None
        if len(hashes) > 1:
            time.sleep(max(3.0, 3 * self.p.slot_ms / 1000))
            _, h2, hashes2 = self._tips(runs)
            later = len(hashes2) == 1
            self.notes.append(
                f"{variant}{self._rtag()}: {len(hashes)} different blocks at height {h} after "
                f"the load; {'resolved' if later else f'still split at height {h2}'} "
                "a few slots later"
            )
        self.result.record(
            "chain",
            {
                "variant": variant,
                "round": self.round,
                "nodes": len(heights),
                "height_min": h,
                "height_max": max(heights.values()),
                "distinct_blocks": len(hashes),
                "agree": len(hashes) == 1,
                "agree_later": later if later is not None else True,
            },
        )

    # -- figures -------------------------------------------------------------------------------
    def _rtag(self) -> str:
        return f" r{self.round}" if self.p.rounds > 1 else ""

    def _record_round(self, variant: str, runs: list[NodeRun], load_s: float) -> None:
        """Per-node deltas of this round's load phase (CPU, /metrics), kept raw for _summarise."""
        self.result.record(
            "loads",
            {
                "variant": variant,
                "round": self.round,
                "load_s": round(load_s, 3),
                # planned (tx_rate x duration) vs offered (POSTs made) vs accepted: a generator
                # that falls behind on a busy host offers less, and variants differ
                "txs_planned": round(self.p.tx_rate * self.p.duration_s),
                "txs_offered": self.progress.txs_offered,
                "txs_sent": self.progress.txs_sent,
                **self.cpu_split,
            },
        )
        for r in runs:
            d = {k: r.metrics_end.get(k, 0.0) - r.metrics_start.get(k, 0.0) for k in r.metrics_end}
            cpu = None
            if r.cpu_start_s is not None and r.cpu_end_s is not None:
                cpu = round((r.cpu_end_s - r.cpu_start_s) / load_s * 100, 1)
            vb_s = metric_sum(d, "netdiag_node_validation_seconds_sum", kind="block")
            vb_n = metric_sum(d, "netdiag_node_validation_seconds_count", kind="block")
            vt_s = metric_sum(d, "netdiag_node_validation_seconds_sum", kind="tx")
            vt_n = metric_sum(d, "netdiag_node_validation_seconds_count", kind="tx")
            self.result.record(
                "nodes",
                {
                    "variant": variant,
                    "round": self.round,
                    "node": r.name,
                    "cpu_pct": cpu,
                    "blocks_received": metric_sum(d, "netdiag_node_blocks_received_total"),
                    "txs_received": metric_sum(d, "netdiag_node_txs_received_total"),
                    "duplicates": metric_sum(d, "netdiag_node_gossip_duplicates_total"),
                    "block_validation_s": vb_s,
                    "block_validations": vb_n,
                    "tx_validation_s": vt_s,
                    "tx_validations": vt_n,
                    "block_validation_ms_avg": round(vb_s / vb_n * 1e3, 3) if vb_n else None,
                    "tx_validation_us_avg": round(vt_s / vt_n * 1e6, 1) if vt_n else None,
                },
            )

    def _summarise(self, variant: str) -> None:
        """The summary tables of one variant, pooled over its rounds."""
        raw = self.result.raw
        mine = [r for r in raw.get("loads", []) if r["variant"] == variant]
        load_s = sum(float(r["load_s"] or 0) for r in mine)
        for row in p2p_stats.propagation_summary(raw.get("propagation", []), variant):
            self.result.add_summary("propagation", row)
        if raw.get("transport"):
            self.result.add_summary(
                "transport", p2p_stats.transport_summary(raw["transport"], variant, load_s)
            )
        nodes = [r for r in raw.get("nodes", []) if r["variant"] == variant]
        cpu = [float(r["cpu_pct"]) for r in nodes if r["cpu_pct"] is not None]
        blk_s = sum(float(r["block_validation_s"] or 0) for r in nodes)
        blk_n = sum(float(r["block_validations"] or 0) for r in nodes)
        tx_s = sum(float(r["tx_validation_s"] or 0) for r in nodes)
        tx_n = sum(float(r["tx_validations"] or 0) for r in nodes)
        self.result.add_summary(
            "validation",
            {
                "variant": variant,
                "block_validation_ms_avg": round(blk_s / blk_n * 1e3, 3) if blk_n else None,
                "tx_validation_us_avg": round(tx_s / tx_n * 1e6, 1) if tx_n else None,
                "cpu_pct_per_node_avg": round(sum(cpu) / len(cpu), 1) if cpu else None,
                "cpu_pct_per_node_max": max(cpu) if cpu else None,
                "load_s": round(load_s, 2),
                "txs_planned": sum(int(r.get("txs_planned") or 0) for r in mine),
                "txs_offered": sum(int(r.get("txs_offered") or 0) for r in mine),
                "txs_sent": sum(int(r["txs_sent"] or 0) for r in mine),
                "nodes_cpu_pct_total": round(sum(cpu) / max(1, len(mine)), 1) if cpu else None,
                "forwarders_cpu_pct": _mean(r.get("forwarders_cpu_pct") for r in mine),
                "bench_cpu_pct": _mean(r.get("bench_cpu_pct") for r in mine),
                "host_load_avg_1m": _mean(r.get("host_load_avg_1m") for r in mine),
            },
        )
        chains = [r for r in raw.get("chain", []) if r["variant"] == variant]
        if chains:
            self.result.add_summary(
                "chain",
                {
                    "variant": variant,
                    "rounds": len(chains),
                    "height_max": max(int(r["height_max"] or 0) for r in chains),
                    "rounds_split": sum(1 for r in chains if not r["agree"]),
                    "rounds_forked": sum(1 for r in chains if not r.get("agree_later", r["agree"])),
                },
            )
        byz = [r for r in raw.get("byzantine", []) if r["variant"] == variant]
        if byz:
            self.result.add_summary(
                "byzantine",
                {
                    "variant": variant,
                    "rounds": len(byz),
                    "joiner_synced_rounds": sum(1 for r in byz if r["joiner_synced"]),
                    "forger_banned_rounds": sum(1 for r in byz if r["forger_banned_by_joiner"]),
                },
            )
        for case in ("late_join", "restart"):
            rs = [
                r
                for r in raw.get("sync_results", [])
                if r["variant"] == variant and r["case"] == case
            ]
            if not rs:
                continue

            def med(key: str, rs: list[Any] = rs, as_int: bool = False) -> float | None:
                vals = [float(r[key]) for r in rs if r[key] is not None]
                if not vals:
                    return None
                m = statistics.median(vals)
                return round(m) if as_int else round(m, 3)

            self.result.add_summary(
                "sync",
                {
                    "variant": variant,
                    "case": case,
                    "rounds": len(rs),
                    "synced_rounds": sum(1 for r in rs if r["sync_s"] is not None),
                    "sync_s": med("sync_s"),
                    "blocks": med("blocks", as_int=True),
                    "blocks_per_s": med("blocks_per_s"),
                    "api_up_s": med("api_up_s"),
                    "sync_after_api_s": med("sync_after_api_s"),
                },
            )


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


def _first_seen(rec: dict[str, Any], t0: float, t1: float) -> tuple[float, int, float]:
    """When a node first saw a message, on this host's CLOCK_MONOTONIC (the nodes' clock too).

    The node reports the absolute time (`first_seen_monotonic_ns`, exact) and its age at the
    moment it answered (`first_seen_age_s`); for the age, that moment lies between our send (t0)
    and receive (t1), so the midpoint is used and half the round trip is the error bound.
    """
    dups = int(rec.get("duplicates", 0))
    if "first_seen_monotonic_ns" in rec:
        return int(rec["first_seen_monotonic_ns"]) / 1e9, dups, 0.0
    return (t0 + t1) / 2 - float(rec["first_seen_age_s"]), dups, (t1 - t0) / 2


def _params_dict(p: P2PParams) -> dict[str, Any]:
    d = asdict(p)
    d["cc"] = list(p.cc)
    prof = p.link_profile()
    d["link_rate_bps"], d["link_loss"] = prof.rate_bps, prof.loss
    return d
