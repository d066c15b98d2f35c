"""`bench p2p` load phase: signed transactions at --tx-rate, every block and every k-th
transaction followed to every node, sockets sampled each second, faults at mid-load."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import Any

from netdiag.bench import p2p_stats
from netdiag.bench.p2p_driver import (
    ClusterDriver,
    Pending,
    _first_seen,
    _retry,
)
from netdiag.bench.p2p_poster import POST_TIMEOUT_S, TxPoster
from netdiag.diagnose import Sample, judge_samples
from netdiag.lab.cluster import (
    P2P_PORT,
    NodeRun,
    cpu_s,
    pids_cpu_s,
)
from netdiag.nodeapi import (
    NodeUnavailable,
    Peer,
    block_message_id,
    parse_metrics,
    peers_by_sock_cookie,
)


class LoadPhase(ClusterDriver):
    # -- load phase ---------------------------------------------------------------------------
    def _load(
        self,
        lab: Any,
        variant: str,
        runs: dict[str, NodeRun],
        producer_of: dict[str, str],
        t0: float,
    ) -> tuple[list[NodeRun], float]:
        """The load phase: returns the nodes that took part and how long it ran."""
        p = self.p
        active = [r for r in runs.values() if r.in_load]
        one_way, self._hops = self.graph.paths(frozenset({self.late_joiner}))
        for r in active:
            r.cpu_start_s = cpu_s(r)
            with contextlib.suppress(NodeUnavailable):
                r.metrics_start = parse_metrics(r.client().metrics_text())
        # where a large cluster breaks: the link emulator, the nodes, or this bench itself
        fwd_pids = lab.forwarder_pids() if lab is not None else []
        fwd_cpu0, own_cpu0 = pids_cpu_s(fwd_pids), pids_cpu_s([os.getpid()])
        ref = active[0]
        by_name = {r.name: r for r in active}
        network_id = str(_retry(lambda: ref.client().get_json("/status"))["network_id"])
        start_height = max(self._sample_status(variant, active, 0.0).values(), default=0)
        tracked: list[Pending] = []
        tx_lock = threading.Lock()
        killed: set[str] = set()

        def accepted(node: str, txid: str) -> None:
            self.progress.txs_sent += 1
            if self.progress.txs_sent % p.tx_sample_every == 0:
                with tx_lock:
                    tracked.append(
                        Pending("tx", txid, node, time.monotonic(), txid[:12], p.tx_bytes)
                    )

        # open loop over several connections: the schedule does not wait for answers
        poster = TxPoster(
            {r.name: r.client() for r in active},  # their addresses only
            p.tx_rate,
            round(p.tx_rate * p.duration_s),
            p.tx_bytes,
            f"bench-p2p:{p.seed}:{variant}".encode(),
            alive=lambda n: n not in killed,
            on_accepted=accepted,
        )
        self.poster = poster

        self._phase("load", p.duration_s)
        load_t0 = time.monotonic()
        thread = threading.Thread(target=poster.run, name="p2p-tx-poster", daemon=True)
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
                                int(blk.get("size_bytes") or 0),
                            )
                        )
                    next_height += 1
                with tx_lock:
                    pending.extend(tracked)
                    tracked.clear()
                if lab is not None:  # sockets of nodes elsewhere are not this host's to see
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
            poster.stop.set()  # slots not reached by now count as shed
            thread.join(timeout=POST_TIMEOUT_S + 5)
            if heal_at is not None:
                self._heal(lab)
        load_s = time.monotonic() - load_t0
        self.progress.txs_offered = poster.stats.offered
        for r in active:  # CPU of the load phase only: read before settling
            r.cpu_end_s = cpu_s(r)
        self.cpu_split = {
            "forwarders_cpu_pct": round((pids_cpu_s(fwd_pids) - fwd_cpu0) / load_s * 100, 1),
            "bench_cpu_pct": round((pids_cpu_s([os.getpid()]) - own_cpu0) / load_s * 100, 1),
            "host_load_avg_1m": round(os.getloadavg()[0], 2),
        }
        self._phase("settling", p.settle_s)
        time.sleep(p.settle_s)
        self._resolve(variant, active, pending, one_way, killed, final=True)
        for r in active:
            with contextlib.suppress(NodeUnavailable):
                r.metrics_end = parse_metrics(r.client().metrics_text())
        return active, load_s

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
                    got = _first_seen(rec, t0, t1, self.same_clock)
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
            sf_way = self._sf_paths(m.size_bytes)
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
                        "sf_bound_us": p2p_stats.lower_bounds_us(sf_way, m.origin, r.name),
                        "hops": self._hops.get(m.origin, {}).get(r.name),
                        "duplicates": rec[1] if rec else None,
                        "error_us": round((rec[2] + err0) * 1e6, 1) if rec else None,
                    },
                )
        return keep

    def _sf_paths(self, size_bytes: int) -> dict[str, dict[str, float]]:
        """The store-and-forward bound's one-way latencies for a message of ``size_bytes``:
        each hop costs its delay plus the message's serialisation at the link rate (a relay
        checks a block before it forwards it, so it cannot cut through)."""
        rate = self.p.link_profile().rate_bps
        per_hop = size_bytes * 8 / rate if rate else 0.0
        return self.graph.paths(frozenset({self.late_joiner}), per_hop)[0]

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
