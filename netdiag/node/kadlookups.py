"""Iterative lookups on the injected clock: the join (self) lookup, bucket refreshes, and the
stats /status, /peers/table and the bench read.

A lookup (kademlia.Lookup) keeps α FindNode requests in flight through KadRpc (a peer
connection or a short-lived probe); contacts named in answers are candidates only. A node runs
a self-lookup when it first has a peer and every ``kad_refresh_s``, and refreshes each bucket
from the farthest non-empty one inwards with a lookup of a random id in it when it was not
looked up for ``kad_refresh_s``. At most ``MAX_LOOKUPS`` run at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from netdiag.node.config import NodeConfig
from netdiag.node.kademlia import Contact, Lookup, RoutingTable, bucket_index, random_id_in_bucket
from netdiag.node.kadrpc import DiscoveryMetrics, KadRpc
from netdiag.node.messages import FindNode
from netdiag.node.runtime import Clock

MAX_LOOKUPS = 2  # lookups in flight at once (each has α requests in flight)


@dataclass
class LookupRun:
    lookup: Lookup
    purpose: str  # self | refresh | random
    started: float
    on_done: Callable[[Lookup], None] | None


@dataclass
class LookupStats:
    """The last lookups, for /status and the bench (latency and hops)."""

    completed: int = 0
    last_hops: int = 0
    last_seconds: float = 0.0
    recent: list[RecentLookup] = field(default_factory=list)


@dataclass(frozen=True)
class RecentLookup:
    purpose: str
    hops: int
    seconds: float
    replies: int
    queries: int  # FindNode requests sent
    nearest: str  # host:port of the nearest node that answered ("" when none did)


class Lookups:
    def __init__(
        self,
        cfg: NodeConfig,
        clock: Clock,
        m: DiscoveryMetrics,
        table: RoutingTable,
        net: KadRpc,
        usable: Callable[[Contact], bool],
        connected: Callable[[], list[Contact]],
    ) -> None:
        self.cfg = cfg
        self.clock = clock
        self.m = m
        self.table = table
        self.kid = table.own_kid
        self.net = net
        self.usable = usable
        self.connected = connected  # peers to ask while nothing is tabled yet
        self.running: list[LookupRun] = []
        self.stats = LookupStats()
        self.bucket_refreshed: dict[int, float] = {}
        self.joined = False
        self.last_self_lookup = -1e18

    def start(
        self, target: bytes, purpose: str, on_done: Callable[[Lookup], None] | None = None
    ) -> Lookup:
        seeds = self.table.closest(target, self.cfg.kad_k, keep=self.usable)
        if not seeds:  # nothing tabled yet: ask whoever we are connected to
            seeds = self.connected()
        lk = Lookup(target, seeds, self.table.own_node_id, self.cfg.kad_k, self.cfg.kad_alpha)
        run = LookupRun(lk, purpose, self.clock.monotonic(), on_done)
        self.running.append(run)
        self.m.lookups.labels(purpose).inc()
        self._pump(run)
        return lk

    def _pump(self, run: LookupRun) -> None:
        lk = run.lookup
        for c in lk.next_queries():

            def done(res: list[Contact] | None, c: Contact = c) -> None:
                if res is None:
                    lk.on_failure(c.node_id)
                else:
                    lk.on_reply(c.node_id, [f for f in res if self.usable(f)])
                self._pump(run)

            self.net.rpc(c, FindNode(0, lk.target), "find", done)
        if lk.done and run in self.running:
            self._finished(run)

    def _finished(self, run: LookupRun) -> None:
        lk = run.lookup
        self.running.remove(run)
        took = self.clock.monotonic() - run.started
        if lk.replies:
            self.m.lookup_seconds.observe(took)
            self.m.lookup_hops.observe(lk.hops)
        if lk.target != self.kid:  # any lookup into a bucket refreshes it
            self.bucket_refreshed[bucket_index(self.kid, lk.target)] = self.clock.monotonic()
        st = self.stats
        st.completed += 1
        st.last_hops, st.last_seconds = lk.hops, took
        found = lk.result()
        rec = RecentLookup(
            run.purpose,
            lk.hops,
            round(took, 6),
            lk.replies,
            lk.queries,
            found[0].addr if found else "",
        )
        st.recent = [*st.recent[-63:], rec]
        if run.on_done is not None:
            run.on_done(lk)

    def maintain(self) -> None:
        """Periodic: the join lookup, then the self-lookup and bucket refreshes when due."""
        if len(self.running) >= MAX_LOOKUPS:
            return
        now = self.clock.monotonic()
        if not self.joined or now - self.last_self_lookup >= self.cfg.kad_refresh_s:
            self.joined = True
            self.last_self_lookup = now
            self.start(self.kid, "self")
            return
        for idx in reversed(self.table.nonempty_range()):
            if now - self.bucket_refreshed.get(idx, -1e18) < self.cfg.kad_refresh_s:
                continue
            self.bucket_refreshed[idx] = now
            self.m.refreshes.inc()
            self.start(random_id_in_bucket(self.kid, idx, os.urandom(32)), "refresh")
            return
