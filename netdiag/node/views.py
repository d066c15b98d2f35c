"""What the REST API may see of a node: the ``NodeView`` Protocol and its implementation
over the core. The API depends on this Protocol only, never on the daemon."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Protocol

from netdiag.node.core import NodeCore
from netdiag.node.model import Block, Tx
from netdiag.node.runtime import SystemClock
from netdiag.node.window_sync import ParallelSync


class NodeView(Protocol):
    def status(self) -> dict[str, object]: ...
    def peers(self) -> list[dict[str, object]]: ...
    def table(self) -> dict[str, object]: ...
    def message_stats(self, mid: bytes) -> dict[str, object] | None: ...
    def metrics_text(self) -> bytes: ...
    def block_at(self, height: int) -> Block | None: ...
    def block_by_hash(self, block_hash: bytes) -> Block | None: ...
    def submit_local_tx(self, tx: Tx) -> tuple[str, bytes]: ...


class CoreView:
    def __init__(self, core: NodeCore, tls: bool) -> None:
        self.core = core
        self.tls = tls

    def status(self) -> dict[str, object]:
        core = self.core
        chain, sync, conns = core.chain, core.sync, core.conns
        out = sum(c.outbound for c in conns.values())
        # "height" is what is on disk (a kill -9 keeps it); the chain may be a few blocks
        # ahead in memory while the writer thread commits (writer.py)
        durable = chain.store.durable_tip() or chain.tip
        return {
            "node_id": core.node_id.hex(),
            "network_id": core.genesis.network_id,
            "genesis_hash": chain.genesis_hash.hex(),
            "height": durable.height,
            "tip_hash": durable.hash.hex(),
            "tip_timestamp_ms": durable.header.timestamp_ms,
            "chain_height": chain.height,
            "state_root": chain.ledger.root().hex(),  # the state after chain_height
            "store_pending_blocks": chain.store.pending_blocks,
            "peers": len(conns),
            "peers_outbound": out,
            "peers_inbound": len(conns) - out,
            "uptime_s": round(core.clock.monotonic() - core.started_at, 3),
            "synchronized": core.synchronized(),
            "sync_distance": max(0, sync.head_height() - chain.height),
            "head_height": sync.head_height(),
            "sync_phase": sync.phase,
            "sync": sync_view(sync),
            "onboarding": core.onboarding.view(),
            "entropy_check": core.entropy.view(),
            "validator_quorum": core.quorum_connected(),
            "banned_peers": sorted(
                pid.hex() for pid in core.book.banned if core.book.peer_banned(pid)
            ),
            "validators_reachable": core.producer.validators_reachable(),
            "best_peer_height": sync.best_peer_height(),
            "validator": core.is_validator,
            "mempool_txs": len(core.mempool),
            "orphan_blocks": len(chain.orphans),
            "p2p_port": core.listen_port,
            "tls": self.tls,
            "pid": os.getpid(),
            "discovery": core.discovery.summary(),
        }

    def table(self) -> dict[str, object]:
        """The Kademlia routing table (GET /peers/table)."""
        return core_table(self.core)

    def peers(self) -> list[dict[str, object]]:
        core = self.core
        now = core.clock.monotonic()
        return [
            {
                **core.discovery.entry_view(pid),
                "peer_id": pid.hex(),
                "address": c.address,
                "listen_addr": c.listen_addr,
                "direction": c.direction,
                "mesh": core.gossip.mesh_topics(pid),
                "score": round(core.gossip.score(pid), 3),
                "score_kept": round(core.scores.peer_score(pid), 3),
                "socket_cookie": c.cookie,
                "tls": c.tls,
                "height": core.sync.peer_height.get(c),
                "connected_s": round(now - c.connected_at, 3),
            }
            for pid, c in sorted(core.conns.items())
        ]

    def message_stats(self, mid: bytes) -> dict[str, object] | None:
        core = self.core
        rec = core.gossip.seen.get(mid)
        if rec is None:
            return None
        age_s = core.clock.monotonic() - rec.first_seen
        # Absolute first-seen time on CLOCK_MONOTONIC: one clock for every node on this host,
        # so a bench can compare nodes without the request's round trip in the error.
        mono_ns = (
            round(rec.first_seen * 1e9)
            if isinstance(core.clock, SystemClock)
            else time.monotonic_ns() - round(age_s * 1e9)
        )
        return {
            "topic": rec.topic,
            "first_seen_age_s": round(age_s, 6),
            "first_seen_monotonic_ns": mono_ns,
            "duplicates": rec.duplicates,
            "first_peer": rec.first_peer.hex() if rec.first_peer else None,
            "verdict": rec.verdict,
        }

    def metrics_text(self) -> bytes:
        return self.core.metrics.exposition()

    def block_at(self, height: int) -> Block | None:
        chain = self.core.chain
        return chain.store.block_at(height) if 0 <= height <= chain.height else None

    def block_by_hash(self, block_hash: bytes) -> Block | None:
        return self.core.chain.store.block_by_hash(block_hash)

    def submit_local_tx(self, tx: Tx) -> tuple[str, bytes]:
        return self.core.ingest.submit_local_tx(tx)

    def submit_local_tx_later(self, tx: Tx, done: Callable[[str, bytes], None]) -> None:
        """On the node loop: the tx's signature in a batch (txbatch.py), ``done`` later."""
        self.core.ingest.submit_local_tx_later(tx, done)


def sync_view(sync: ParallelSync) -> dict[str, object]:
    """The parallel sync engine as /status shows it."""
    now = sync.clock()
    s = sync.stats
    took = None
    if s.started_at is not None:
        took = round((s.finished_at or now) - s.started_at, 3)
    return {
        "phase": sync.phase,
        "target_height": sync.target,
        "buffered_blocks": len(sync.buffer),
        "requests_in_flight": len(sync.reqs),
        "blocks_downloaded": s.blocks_downloaded,
        "blocks_committed": s.blocks_committed,
        "segments_committed": s.segments_committed,
        "chain_breaks": s.breaks,
        "stalls": s.stalls,
        "bans": s.bans,
        "last_catch_up_s": took,
        "last_reason": s.last_reason,
        "peers": [
            {
                "peer_id": (p.conn.peer_id or b"").hex(),
                "claimed_height": p.claimed,
                "verified_height": p.verified,
                "in_flight": p.inflight,
                "timeout_s": p.timeout_s,
                "stalls": p.stalls,
                "benched": p.benched_until > now,
                "blocks_served": p.blocks_served,
            }
            for p in sync.peers.values()
        ],
    }


def core_table(core: NodeCore) -> dict[str, object]:
    disc = core.discovery
    return {
        "node_id": core.node_id.hex(),
        "kad_id": disc.kid.hex(),
        "k": core.cfg.kad_k,
        "size": len(disc.table),
        "entries": disc.table_view(),
        "recent_lookups": [
            {
                "purpose": r.purpose,
                "hops": r.hops,
                "seconds": r.seconds,
                "replies": r.replies,
                "queries": r.queries,
                "nearest": r.nearest,
            }
            for r in disc.stats.recent
        ],
        **disc.summary(),
    }
