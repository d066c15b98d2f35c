"""Prometheus metrics in a per-node registry (no process-global state)."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

NAMESPACE = "netdiag_node"
DELAY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
HOLD_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)
BACKLOG_BUCKETS = (0, 1500, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20)
VALIDATION_BUCKETS = (1e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.05, 0.25)


class _Maker:
    """One metric per call, in the node's namespace and registry: name, help, label names."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.r = registry

    def counter(self, name: str, doc: str, *labels: str) -> Counter:
        return Counter(name, doc, labels, namespace=NAMESPACE, registry=self.r)

    def gauge(self, name: str, doc: str, *labels: str) -> Gauge:
        return Gauge(name, doc, labels, namespace=NAMESPACE, registry=self.r)

    def histogram(self, name: str, doc: str, *labels: str, buckets: Sequence[float]) -> Histogram:
        return Histogram(name, doc, labels, buckets=buckets, namespace=NAMESPACE, registry=self.r)


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        m = _Maker(self.registry)
        self.blocks_received = m.counter("blocks_received", "Blocks received, by source", "source")
        self.blocks_validated = m.counter("blocks_validated", "Blocks validated and committed")
        self.blocks_rejected = m.counter("blocks_rejected", "Blocks rejected, by rule", "reason")
        self.blocks_forwarded_early = m.counter(
            "blocks_forwarded_early",
            "Gossiped blocks forwarded after their cheap checks, before the full check",
        )
        self.early_forward_failed = m.counter(
            "early_forward_failed",
            "Blocks forwarded early whose full check then failed (their producer penalized)",
        )
        self.blocks_produced = m.counter("blocks_produced", "Blocks produced by this node")
        self.txs_received = m.counter("txs_received", "Transactions received, by source", "source")
        self.txs_validated = m.counter("txs_validated", "Transactions validated into the mempool")
        self.txs_rejected = m.counter("txs_rejected", "Transactions rejected, by rule", "reason")
        self.gossip_duplicates = m.counter(
            "gossip_duplicates", "Duplicate gossip messages", "topic"
        )
        self.gossip_first_seen_delay = m.histogram(
            "gossip_first_seen_delay_seconds",
            "Delay from a message's timestamp to its first arrival here",
            "topic",
            buckets=DELAY_BUCKETS,
        )
        # what this hop adds to propagation (bench p2p reads both): from the read that
        # completed a gossip frame to its forward being written to every mesh peer ...
        self.forward_hold_seconds = m.histogram(
            "forward_hold_seconds",
            "Gossip: from the read that completed a frame to its forward (this node's share)",
            "topic",
            buckets=HOLD_BUCKETS,
        )
        # ... and the bytes a forwarded block frame found ahead of it on each peer's socket
        self.forward_backlog_bytes = m.histogram(
            "forward_backlog_bytes",
            "Bytes queued ahead of a forwarded block frame (ours and the kernel's, unsent)",
            buckets=BACKLOG_BUCKETS,
        )
        # how late a timer fires on the node loop: what a readable socket waits to be read
        self.loop_lag_seconds = m.histogram(
            "loop_lag_seconds", "Node loop: lateness of a periodic timer", buckets=HOLD_BUCKETS
        )
        self.validation_seconds = m.histogram(
            "validation_seconds", "Validation time", "kind", buckets=VALIDATION_BUCKETS
        )
        # CPU time of the validating (loop) thread, beside the wall time above: on a starved host
        # the wall time grows with the run queue, this does not (pool-side signature work excluded)
        self.validation_cpu_seconds = m.counter(
            "validation_cpu_seconds", "Validation CPU time on the node loop's thread", "kind"
        )
        self.peers = m.gauge("peers", "Connected authenticated peers", "direction")
        self.limits = m.gauge("limit", "Effective resource limits (resources.Limits)", "name")
        self.resource_usage = m.gauge(
            "resource_usage",
            "Resources in use: connections by state, bytes held by connections",
            "resource",
        )
        self.limit_hits = m.counter("limit_hits", "Resource or rate limit hits", "limit")
        self.protocol_violations = m.counter(
            "protocol_violations", "Peer protocol violations", "reason"
        )
        self.handshakes = m.counter("handshakes", "Handshake outcomes", "result")
        self.bans = m.counter("bans", "Peers or addresses banned", "kind")
        self.reorgs = m.counter("reorgs", "Switches to a longer competing branch")
        self.reorg_depth = m.histogram(
            "reorg_depth_blocks", "Blocks replaced per reorg", buckets=(1, 2, 3, 5, 8, 16, 32, 64)
        )
        self.height = m.gauge("height", "Height of the stored tip")
        self.durable_height = m.gauge("durable_height", "Height of the tip on disk")
        self.store_pending = m.gauge(
            "store_pending_blocks",
            "Blocks committed in memory that the writer thread has not made durable yet",
        )
        self.store_commit_seconds = m.histogram(
            "store_commit_seconds",
            "Writer thread: a commit from queued to durable",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30),
        )
        self.store_lock_waits = m.counter(
            "store_lock_waits",
            "Commit attempts refused because another connection held the database locked",
        )
        self.compact_blocks = m.counter(
            "compact_blocks",
            "Compact block relay (compact.py): sent, received, rebuilt (from the mempool alone), "
            "txn_requested, txn_ok, txn_served, fetched (full block fallback), duplicate, "
            "refused (ids or header not matching), fallback_timeout, fallback_not_held, "
            "fallback_bad_answer, failed, late_answer, txn_unanswered (getblocktxn timed out), "
            "parallel_ask (a new announcer asked at once: the one asked leaves requests "
            "unanswered)",
            "event",
        )
        self.compact_missing_txs = m.counter(
            "compact_missing_txs", "Transactions a compact block named that we had to ask for"
        )
        self.mempool_txs = m.gauge("mempool_txs", "Transactions in the mempool")
        self.orphans = m.gauge("orphan_blocks", "Blocks held in the orphan pool")
        self.gossip_seen = m.gauge("gossip_seen_messages", "Records in the gossip seen cache")
        self.gossip_seen_evicted = m.gauge(
            "gossip_seen_evicted", "Seen-cache records dropped by gossip_seen_max before their TTL"
        )
        self.bytes_received = m.counter("bytes_received", "Wire bytes received from peers")
        self.messages_received = m.counter(
            "messages_received", "Wire messages received, by type", "type"
        )
        self.sync_blocks_committed = m.counter(
            "sync_blocks_committed", "Blocks committed by parallel sync (verified segments)"
        )
        self.sync_distance = m.gauge(
            "sync_distance_blocks", "Verified network head height minus our height"
        )
        self.sync_phase = m.gauge("sync_phase", "1 for the current sync phase", "phase")
        self.sync_events = m.counter(
            "sync_events", "Parallel sync events: chain_break, stall, ban", "event"
        )
        self.entropy_checks = m.counter(
            "entropy_checks",
            "Epoch-boundary entropy checks, by outcome (agree, mismatch, split, unverified)",
            "outcome",
        )
        self.entropy_votes = m.counter(
            "entropy_votes",
            "Peer votes in entropy checks (agree, disagree, abstain, no_answer = timed out)",
            "vote",
        )
        self.entropy_producing_halted = m.gauge(
            "entropy_producing_halted",
            "1 while block production is stopped by a failed entropy check",
        )
        self.snapshot_chunks = m.gauge(
            "snapshot_chunks",
            "Onboarding: snapshot chunks by state (verified, resumed, bad, retried, queued)",
            "state",
        )
        self.snapshot_bytes = m.gauge(
            "snapshot_bytes",
            "Snapshot bytes fetched by onboarding (headers, manifest, chunks) and served",
            "direction",
        )
        self.snapshot_chunk_latency = m.gauge(
            "snapshot_chunk_latency_p50_seconds",
            "Onboarding: median request-to-verified time of a chunk",
        )
        self.backfill_blocks = m.gauge(
            "backfill_blocks", "Blocks below the snapshot base: backfilled, remaining", "state"
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
