"""Prometheus metrics in a per-node registry (no process-global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

DELAY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
VALIDATION_BUCKETS = (1e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.05, 0.25)


class NodeMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        ns = "netdiag_node"
        self.blocks_received = Counter(
            "blocks_received", "Blocks received, by source", ["source"], namespace=ns, registry=r
        )
        self.blocks_validated = Counter(
            "blocks_validated", "Blocks validated and committed", namespace=ns, registry=r
        )
        self.blocks_rejected = Counter(
            "blocks_rejected", "Blocks rejected, by rule", ["reason"], namespace=ns, registry=r
        )
        self.blocks_forwarded_early = Counter(
            "blocks_forwarded_early",
            "Gossiped blocks forwarded after their cheap checks, before the full check",
            namespace=ns,
            registry=r,
        )
        self.early_forward_failed = Counter(
            "early_forward_failed",
            "Blocks forwarded early whose full check then failed (their producer penalized)",
            namespace=ns,
            registry=r,
        )
        self.blocks_produced = Counter(
            "blocks_produced", "Blocks produced by this node", namespace=ns, registry=r
        )
        self.txs_received = Counter(
            "txs_received", "Transactions received, by source", ["source"], namespace=ns, registry=r
        )
        self.txs_validated = Counter(
            "txs_validated", "Transactions validated into the mempool", namespace=ns, registry=r
        )
        self.txs_rejected = Counter(
            "txs_rejected", "Transactions rejected, by rule", ["reason"], namespace=ns, registry=r
        )
        self.gossip_duplicates = Counter(
            "gossip_duplicates", "Duplicate gossip messages", ["topic"], namespace=ns, registry=r
        )
        self.gossip_first_seen_delay = Histogram(
            "gossip_first_seen_delay_seconds",
            "Delay from a message's timestamp to its first arrival here",
            ["topic"],
            buckets=DELAY_BUCKETS,
            namespace=ns,
            registry=r,
        )
        self.validation_seconds = Histogram(
            "validation_seconds",
            "Validation time",
            ["kind"],
            buckets=VALIDATION_BUCKETS,
            namespace=ns,
            registry=r,
        )
        self.peers = Gauge(
            "peers", "Connected authenticated peers", ["direction"], namespace=ns, registry=r
        )
        self.limits = Gauge(
            "limit",
            "Effective resource limits (resources.Limits)",
            ["name"],
            namespace=ns,
            registry=r,
        )
        self.resource_usage = Gauge(
            "resource_usage",
            "Resources in use: connections by state, bytes held by connections",
            ["resource"],
            namespace=ns,
            registry=r,
        )
        self.limit_hits = Counter(
            "limit_hits", "Resource or rate limit hits", ["limit"], namespace=ns, registry=r
        )
        self.protocol_violations = Counter(
            "protocol_violations", "Peer protocol violations", ["reason"], namespace=ns, registry=r
        )
        self.handshakes = Counter(
            "handshakes", "Handshake outcomes", ["result"], namespace=ns, registry=r
        )
        self.bans = Counter("bans", "Peers or addresses banned", ["kind"], namespace=ns, registry=r)
        self.reorgs = Counter(
            "reorgs", "Switches to a longer competing branch", namespace=ns, registry=r
        )
        self.reorg_depth = Histogram(
            "reorg_depth_blocks",
            "Blocks replaced per reorg",
            buckets=(1, 2, 3, 5, 8, 16, 32, 64),
            namespace=ns,
            registry=r,
        )
        self.height = Gauge("height", "Height of the stored tip", namespace=ns, registry=r)
        self.durable_height = Gauge(
            "durable_height", "Height of the tip on disk", namespace=ns, registry=r
        )
        self.store_pending = Gauge(
            "store_pending_blocks",
            "Blocks committed in memory that the writer thread has not made durable yet",
            namespace=ns,
            registry=r,
        )
        self.store_commit_seconds = Histogram(
            "store_commit_seconds",
            "Writer thread: a commit from queued to durable",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30),
            namespace=ns,
            registry=r,
        )
        self.store_lock_waits = Counter(
            "store_lock_waits",
            "Commit attempts refused because another connection held the database locked",
            namespace=ns,
            registry=r,
        )
        self.mempool_txs = Gauge(
            "mempool_txs", "Transactions in the mempool", namespace=ns, registry=r
        )
        self.orphans = Gauge(
            "orphan_blocks", "Blocks held in the orphan pool", namespace=ns, registry=r
        )
        self.bytes_received = Counter(
            "bytes_received", "Wire bytes received from peers", namespace=ns, registry=r
        )
        self.messages_received = Counter(
            "messages_received",
            "Wire messages received, by type",
            ["type"],
            namespace=ns,
            registry=r,
        )

        self.sync_blocks_committed = Counter(
            "sync_blocks_committed",
            "Blocks committed by parallel sync (verified segments)",
            namespace=ns,
            registry=r,
        )
        self.sync_distance = Gauge(
            "sync_distance_blocks",
            "Verified network head height minus our height",
            namespace=ns,
            registry=r,
        )
        self.sync_phase = Gauge(
            "sync_phase", "1 for the current sync phase", ["phase"], namespace=ns, registry=r
        )
        self.sync_events = Counter(
            "sync_events",
            "Parallel sync events: chain_break, stall, ban",
            ["event"],
            namespace=ns,
            registry=r,
        )
        self.entropy_checks = Counter(
            "entropy_checks",
            "Epoch-boundary entropy checks, by outcome (agree, mismatch, split, unverified)",
            ["outcome"],
            namespace=ns,
            registry=r,
        )
        self.entropy_votes = Counter(
            "entropy_votes",
            "Peer votes in entropy checks (agree, disagree, abstain, no_answer = timed out)",
            ["vote"],
            namespace=ns,
            registry=r,
        )
        self.entropy_producing_halted = Gauge(
            "entropy_producing_halted",
            "1 while block production is stopped by a failed entropy check",
            namespace=ns,
            registry=r,
        )

        self.snapshot_chunks = Gauge(
            "snapshot_chunks",
            "Onboarding: snapshot chunks by state (verified, resumed, bad, retried, queued)",
            ["state"],
            namespace=ns,
            registry=r,
        )
        self.snapshot_bytes = Gauge(
            "snapshot_bytes",
            "Snapshot bytes fetched by onboarding (headers, manifest, chunks) and served",
            ["direction"],
            namespace=ns,
            registry=r,
        )
        self.snapshot_chunk_latency = Gauge(
            "snapshot_chunk_latency_p50_seconds",
            "Onboarding: median request-to-verified time of a chunk",
            namespace=ns,
            registry=r,
        )
        self.backfill_blocks = Gauge(
            "backfill_blocks",
            "Blocks below the snapshot base: backfilled, remaining",
            ["state"],
            namespace=ns,
            registry=r,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
