"""The sans-IO node core: every collaborator wired together, driven by events.

Peer events arrive through the ``ConnectionHandler`` methods (``on_open``, ``on_message``,
``on_violation``, ``on_limit``, ``on_closed``) from whatever carries them — the asyncio
transport in the daemon, in-memory links in tests; periodic work arrives as ``*_step`` calls.
Time comes from the injected ``Clock``, deferred work goes to the injected ``Scheduler``. The
core owns no socket, task or loop, so it runs the same under a test's manual clock.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable

from netdiag.node.chain import Chain
from netdiag.node.config import NodeConfig
from netdiag.node.crypto import Identity
from netdiag.node.debug_rotation import produce_ahead
from netdiag.node.discovery import DISCOVERY_MESSAGES, PENALTY_UNSOLICITED, Discovery
from netdiag.node.dispatch import Dispatcher
from netdiag.node.entropy import HashChain
from netdiag.node.entropy_check import EntropyCheck, EntropyParams
from netdiag.node.entropy_host import NodeEntropyHost
from netdiag.node.genesis import GenesisSpec
from netdiag.node.gossip import GossipRouter, params_from
from netdiag.node.ingest import Ingest
from netdiag.node.kadstore import KadStore
from netdiag.node.link import Link
from netdiag.node.logs import NodeLog
from netdiag.node.mempool import Mempool
from netdiag.node.messages import (
    TOPIC_SNAPSHOTS,
    GetPeers,
    Message,
    Peers,
    Ping,
    Prune,
    Publish,
    Status,
)
from netdiag.node.metrics import NodeMetrics
from netdiag.node.model import Block, BlockHeader
from netdiag.node.onboard import Onboarding
from netdiag.node.peering import Peering
from netdiag.node.peers import PeerBook
from netdiag.node.policy import BanPolicy
from netdiag.node.presence import Presence
from netdiag.node.producer import Producer
from netdiag.node.protocol import Violation
from netdiag.node.resources import ConnRateLimiter, Limits, MemoryBudget, resolve_limits
from netdiag.node.runtime import Clock, Scheduler, T
from netdiag.node.scores import ScoreBook
from netdiag.node.sigpool import SigPool
from netdiag.node.snapshot_gossip import Availability
from netdiag.node.snapshot_policy import SnapshotPolicy
from netdiag.node.snapshot_serve import SnapshotService
from netdiag.node.window_sync import ParallelSync, WindowParams
from netdiag.node.writer import WriteDone


class NodeCore:
    def __init__(
        self,
        cfg: NodeConfig,
        log: NodeLog,
        metrics: NodeMetrics,
        identity: Identity,
        genesis: GenesisSpec,
        chain: Chain,
        clock: Clock,
        scheduler: Scheduler,
        entropy_chain: HashChain | None = None,  # our reveals (entropy.py), validators only
        limits: Limits | None = None,
        sigs: SigPool | None = None,  # signature batches on every core; none: inline
    ) -> None:
        self.limits = limits or resolve_limits(cfg)
        self.sigs = sigs or SigPool(0)
        self.cfg = cfg
        self.log = log
        self.metrics = metrics
        self.identity = identity
        self.node_id = identity.node_id
        self.genesis = genesis
        self._chain = chain
        self.clock = clock
        self.scheduler = scheduler
        self.is_validator = self.node_id in genesis.validators
        self.started_at = clock.monotonic()
        self.listen_port = 0  # set by the shell once the listener is bound
        mono = clock.monotonic
        self.mempool = Mempool(cfg.mempool_max_txs, cfg.mempool_max_bytes)
        self.gossip = GossipRouter(
            params_from(cfg),
            mono,
        )
        self.book = PeerBook(cfg, mono)
        self.presence = Presence(
            genesis.validators, chain.genesis_hash, 3 * cfg.presence_interval_s, mono
        )
        lim = self.limits
        self.memory = MemoryBudget(lim.conn_memory_bytes, lim.node_memory_bytes)
        self.peering = Peering(
            cfg,
            log,
            metrics,
            self.node_id,
            self.book,
            self.gossip,
            lim,
            ConnRateLimiter(lim.conn_rate_per_ip, lim.conn_burst_per_ip, mono),
            mono,
        )
        self.scores = ScoreBook(mono, cfg.score_half_life_s, cfg.score_retain_s)
        self.policy = BanPolicy(cfg, log, metrics, self.gossip, self.peering, self.scores)
        self.sync = ParallelSync(
            self,
            mono,
            WindowParams(
                window=cfg.sync_window,
                chunk=cfg.sync_batch,
                per_peer=cfg.sync_peer_inflight,
                timeout_min_s=cfg.sync_timeout_min_s,
                timeout_max_s=cfg.sync_timeout_max_s,
                min_distance=cfg.sync_parallel_min,
            ),
            cfg.sync_batch,
            cfg.sync_timeout_s,
            cfg.max_reorg_depth,
        )
        self.entropy_host = NodeEntropyHost(
            cfg,
            log,
            metrics,
            genesis,
            chain,
            lambda: self.conns,
            self.sync,
            lambda: self.entropy.halted,
        )
        self.entropy = EntropyCheck(
            self.entropy_host,
            mono,
            EntropyParams(sample=cfg.entropy_sample, timeout_s=cfg.entropy_timeout_ms / 1000),
        )
        self.ingest = Ingest(
            cfg,
            log,
            metrics,
            clock,
            scheduler,
            chain,
            self.mempool,
            self.gossip,
            self.presence,
            self.peering,
            self.policy,
            self.sync,
            self.entropy,
            self.sigs,
        )
        self.snapshots = SnapshotPolicy(
            chain,
            log,
            cfg.snapshot_interval,
            cfg.snapshot_keep,
            cfg.snapshot_chunk_bytes,
            self.off_loop,
        )
        self.producer = Producer(
            cfg,
            log,
            metrics,
            clock,
            identity,
            genesis,
            chain,
            self.mempool,
            self.gossip,
            self.presence,
            self.peering,
            self.sync,
            self.entropy,
            self.ingest,
            entropy_chain,
        )
        self.dispatcher = Dispatcher(
            cfg,
            log,
            metrics,
            chain,
            self.gossip,
            self.peering,
            self.policy,
            self.ingest,
            self.sync,
            self.entropy,
        )
        self.availability = Availability(chain.genesis_hash, cfg.snapshot_announce_s, mono)
        self.onboarding = Onboarding(
            self,
            self.availability,
            self.snapshots.store,
            mono,
            clock.wall_ms,
            WindowParams(
                per_peer=cfg.sync_peer_inflight,
                timeout_min_s=cfg.sync_timeout_min_s,
                timeout_max_s=cfg.sync_timeout_max_s,
            ),
            cfg.snapshot_wait_s,
            cfg.snapshot_sync,
            self.sigs,
            cfg.snapshot_min_sources,
        )
        self.snapshot_service = SnapshotService(
            chain, self.snapshots, self.onboarding, cfg.debug_corrupt_chunks
        )
        self.dispatcher.snapshots = self.snapshot_service
        self.ingest.snapshot_announce = self.onboarding.on_announce
        self.ingest.hold_blocks = lambda: self.onboarding.active
        self._announced_at = -1e18
        self._announce: bytes | None = None  # our last published snapshot announcement
        self.discovery = Discovery(
            cfg,
            log,
            metrics,
            clock,
            scheduler,
            self.node_id,
            self.peering,
            self.book,
            self.gossip,
            self.scores,
            listen_port=lambda: self.listen_port,
        )
        # its own SQLite file next to the chain: a table write never holds the chain's lock
        self.discovery.attach_store(KadStore(chain.store.path.parent / "kad.sqlite"))
        self.peering.on_up = self._peer_up
        self.peering.on_down = self.sync.peer_gone
        self._pinged: dict[bytes, float] = {}  # peer id -> when we last pinged it
        metrics.height.set(chain.height)
        for name, value in lim.as_gauges().items():
            metrics.limits.labels(name).set(value)

    @property
    def chain(self) -> Chain:
        return self._chain

    @property
    def height(self) -> int:
        return self._chain.height

    @property
    def conns(self) -> dict[bytes, Link]:
        return self.peering.conns

    def _peer_up(self, conn: Link) -> None:
        conn.send(self._status_msg())
        conn.send(GetPeers())
        if self._announce is not None:  # a joiner need not wait for the next round
            conn.send(Publish(TOPIC_SNAPSHOTS, self._announce))  # same id: deduplicated
        self.discovery.peer_up(conn)

    def _status_msg(self) -> Status:
        c = self._chain
        return Status(c.height, c.tip_hash, c.genesis_hash)

    # -- ConnectionHandler -----------------------------------------------------------------

    def on_open(self, conn: Link) -> str | None:
        disc = self.discovery
        if not disc.net.claims(conn):
            if self.cfg.discovery and conn.outbound:
                refusal = disc.admit_outbound(conn)
                if refusal:
                    self.peering.pending.discard(conn)
                    return refusal
            return self.peering.on_open(conn)
        self.peering.pending.discard(conn)
        return disc.net.on_probe_open(conn)

    def on_message(self, conn: Link, msg: Message, size: int) -> None:
        disc = self.discovery
        if isinstance(msg, DISCOVERY_MESSAGES):
            try:
                why = disc.on_message(conn, msg, size)
            except Exception as e:  # a bug must cost one connection, never the node
                self.log.error("internal_error", f"discovery: {e!r}", exc=traceback.format_exc())
                conn.close(f"internal error handling {type(msg).__name__}")
                return
            if why:
                self.policy.penalize(conn, PENALTY_UNSOLICITED, why)
            return
        if disc.net.is_probe(conn):
            return  # a probe carries discovery requests only; the rest is the remote's chatter
        if self.cfg.discovery and isinstance(msg, Peers | Prune):
            disc.learn_addrs(msg.addrs if isinstance(msg, Peers) else msg.peers)
        self.dispatcher.on_message(conn, msg, size)

    def on_violation(self, conn: Link, v: Violation) -> None:
        self.policy.on_violation(conn, v)

    def on_limit(self, conn: Link, limit: str) -> None:
        self.policy.on_limit(conn, limit)

    def on_closed(self, conn: Link, reason: str) -> None:
        self.discovery.closed(conn)
        self.discovery.net.on_probe_closed(conn)
        self.peering.on_closed(conn, reason)

    # -- dialing (the shell dials what these return and reports how each dial ended) -------

    def dial_targets(self, listen_port: int) -> list[str]:
        """Outbound peers to dial: bootstrap addresses, then (with discovery) table entries
        chosen for diversity, up to the outbound target."""
        out = self.peering.to_dial(listen_port)
        if self.cfg.discovery:
            target = min(self.cfg.target_outbound, self.cfg.max_outbound)
            up = {c.dialed_addr for c in self.conns.values()}
            dialing = len(self.book.dialing - up)  # the shell keeps a dial's address while up
            used = self.peering.outbound_count() + dialing + len(out)
            out += self.discovery.outbound_dials(target - used, also=out)
        return out

    def probe_targets(self) -> list[str]:
        """Short-lived discovery probes to dial (they take no outbound slot)."""
        return self.discovery.net.probe_dials()

    def dial_ended(self, addr: str, peer_id: bytes | None, why: str, probe: bool = False) -> None:
        """An outbound dial ended: connect failed (``peer_id`` None), or the connection closed."""
        if probe:
            self.discovery.net.probe_ended(addr, why)
            return
        self.peering.dial_ended(addr, peer_id, why)
        if peer_id is None or "refus" in why:
            self.discovery.dial_failed(addr)

    def discovery_step(self) -> None:
        self.discovery.step()

    def close(self) -> None:
        """Persist what must outlive the process (the routing table) before the store closes."""
        self.discovery.close()

    # -- store events (writer.WriteBehindStore, from its thread through the loop) ----------

    def store_durable(self, done: WriteDone) -> None:
        """A queued commit is on disk."""
        m = self.metrics
        m.durable_height.set(done.op.blocks[-1].height)
        m.store_pending.set(self._chain.store.pending_blocks)
        m.store_commit_seconds.observe(done.seconds)
        if done.lock_waits:
            m.store_lock_waits.inc(done.lock_waits)
            self.log.warning(
                "store_locked",
                f"blocks {done.op.blocks[0].height}..{done.op.blocks[-1].height} reached the "
                f"disk after {done.seconds:.2f} s: another connection held the database locked "
                "(the node kept running; they were in memory meanwhile)",
                height=done.op.blocks[-1].height,
                seconds=round(done.seconds, 3),
            )

    # -- periodic work ---------------------------------------------------------------------

    def heartbeat_step(self) -> None:
        self.peering.send_all(self.gossip.heartbeat())
        self.metrics.gossip_seen.set(len(self.gossip.seen))
        self.metrics.gossip_seen_evicted.set(self.gossip.seen_evicted)
        now = self.clock.monotonic()
        self.book.expire()
        self.scores.expire()
        interval = self.cfg.ping_interval_s
        for pid, conn in list(self.conns.items()):
            # A silent peer is pinged once per ping interval, not every heartbeat; the idle
            # timeout closes it if it stays silent.
            if (
                now - conn.last_recv > interval
                and now - self._pinged.get(pid, -interval) >= interval
            ):
                self._pinged[pid] = now
                conn.send(Ping(int(now * 1000)))
        for pid in [p for p in self._pinged if p not in self.conns]:
            del self._pinged[pid]

    def sync_step(self) -> None:
        self.metrics.resource_usage.labels("memory_bytes").set(self.memory.used)
        self.metrics.resource_usage.labels("memory_peak_bytes").set(self.memory.peak)
        if self.onboarding.active:
            self.onboarding.tick()  # a snapshot first: the sync engines wait for its state
        else:
            self.sync.tick()
            self.onboarding.tick()  # backfill, once synchronized
        self.entropy.tick()
        self._snapshot_step()
        self.metrics.sync_distance.set(max(0, self.sync.head_height() - self.height))
        for ph in ("discovering", "downloading", "verifying", "committing", "following"):
            self.metrics.sync_phase.labels(ph).set(int(ph == self.sync.phase))

    def _snapshot_step(self) -> None:
        now = self.clock.monotonic()
        if now - self._announced_at >= self.cfg.snapshot_announce_s:
            self._announced_at = now
            data = self._announce = self.snapshot_service.announcement(
                self.identity, self.clock.wall_ms()
            )
            if data is not None:
                _, sends = self.gossip.publish(TOPIC_SNAPSHOTS, data)
                self.peering.send_all(sends)
        st, m = self.onboarding.stats, self.metrics
        for state, n in (
            ("verified", len(self.onboarding.have)),
            ("resumed", st.chunks_resumed),
            ("bad", st.chunks_bad),
            ("retried", st.chunk_retries),
            ("queued", len(self.onboarding.todo)),
        ):
            m.snapshot_chunks.labels(state).set(n)
        m.snapshot_bytes.labels("fetched").set(st.bytes_fetched)
        m.snapshot_bytes.labels("served").set(self.snapshot_service.served_bytes)
        lat = sorted(st.chunk_latency_s)
        m.snapshot_chunk_latency.set(lat[len(lat) // 2] if lat else 0.0)
        m.backfill_blocks.labels("backfilled").set(st.backfilled)
        m.backfill_blocks.labels("remaining").set(max(0, self._chain.store.base_height() - 1))

    def status_step(self) -> None:
        st = self._status_msg()
        for conn in list(self.conns.values()):
            conn.send(st)

    def produce_step(self) -> None:
        if self.cfg.debug_produce_future_rounds:  # LAB ONLY: bench attack future_rounds
            produce_ahead(self.producer)
        else:
            self.producer.maybe_produce()

    def beacon_step(self) -> None:
        self.producer.beacon_step()

    def synchronized(self) -> bool:
        return not self.onboarding.active and self.sync.synchronized()

    def quorum_connected(self) -> bool:
        return self.producer.quorum_connected()

    # -- sync host (sync.SyncHost, window_sync.WindowHost) ----------------------------------

    def apply_block(
        self, conn: Link | None, raw: bytes, source: str, next_raw: bytes | None = None
    ) -> str:
        return self.ingest.apply_block(conn, raw, source, next_raw=next_raw)

    def apply_branch(self, conn: Link, raws: list[bytes]) -> str:
        return self.ingest.apply_branch(conn, raws)

    def fork_point(self, headers: list[BlockHeader]) -> int | None:
        return self._chain.fork_point(headers)

    def penalize(self, conn: Link, amount: float, reason: str) -> None:
        self.policy.penalize(conn, amount, reason)

    def ban(self, conn: Link, reason: str) -> None:
        self.policy.ban(conn, reason)

    def note(self, event: str, msg: str, **fields: object) -> None:
        if event.startswith("sync_"):
            self.metrics.sync_events.labels(event.removeprefix("sync_")).inc()
        self.log.warning(event, msg, **fields)

    def info(self, event: str, msg: str, **fields: object) -> None:
        self.log.info(event, msg, **fields)

    def committed_segment(self, blocks: list[Block], source: str) -> None:
        self.ingest.committed_segment(blocks, source)

    def schedule(self, fn: Callable[[], None]) -> None:
        def guarded() -> None:
            try:
                fn()
            except Exception as e:  # a bug in a sync step must not kill the loop callback
                self.log.error(
                    "internal_error",
                    f"sync step failed: {e!r}",
                    exc=traceback.format_exc(),
                )

        self.scheduler.call_soon(guarded)

    def off_loop(self, fn: Callable[[], T], done: Callable[[T], None]) -> None:
        self.scheduler.off_loop(fn, done)

    def now_ms(self) -> int:
        return self.clock.wall_ms()

    def stored_hash(self, height: int) -> bytes | None:
        return self._chain.seed_at(height)
