"""Ingest: blocks and transactions in, from gossip, sync, the API or our own producer.

Validates, commits through the chain, keeps the mempool and metrics in step, scores the peer
that sent anything invalid and starts the entropy check at epoch boundaries.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec

from netdiag.node.blockrun import BlockRun
from netdiag.node.chain import Chain
from netdiag.node.compact import CompactRelay
from netdiag.node.config import NodeConfig
from netdiag.node.crypto import preverified
from netdiag.node.entropy_check import EntropyCheck
from netdiag.node.errors import ValidationError
from netdiag.node.gossip import GossipRouter, Send
from netdiag.node.link import Link
from netdiag.node.logs import NodeLog
from netdiag.node.mempool import Mempool
from netdiag.node.messages import TOPIC_BLOCKS, TOPIC_PRESENCE, TOPIC_SNAPSHOTS, TOPIC_TXS
from netdiag.node.metrics import NodeMetrics
from netdiag.node.model import Block, Tx, decode_block
from netdiag.node.peering import Peering
from netdiag.node.policy import PENALTY_INVALID, BanPolicy
from netdiag.node.presence import Presence
from netdiag.node.runtime import Clock, Scheduler
from netdiag.node.sigpool import SigPool
from netdiag.node.state import Overlay, execute
from netdiag.node.store import MAX_PENDING_BLOCKS
from netdiag.node.txbatch import TxBatcher, TxIntake, log_error
from netdiag.node.validation import BadPrevHash, check_block_cheap, check_tx
from netdiag.node.window_sync import ParallelSync


class Known(ValidationError):
    reason = "known"


class NonceTaken(ValidationError):
    reason = "nonce_taken"


FORGERY_REASONS = frozenset({"hash", "signature"})  # in a sync answer: ban at once


def short(b: bytes) -> str:
    return b[:6].hex()


class Ingest:
    def __init__(
        self,
        cfg: NodeConfig,
        log: NodeLog,
        metrics: NodeMetrics,
        clock: Clock,
        scheduler: Scheduler,
        chain: Chain,
        mempool: Mempool,
        gossip: GossipRouter,
        presence: Presence,
        peering: Peering,
        policy: BanPolicy,
        sync: ParallelSync,
        entropy: EntropyCheck,
        sigs: SigPool,
    ) -> None:
        self.cfg = cfg
        self.log = log
        self.metrics = metrics
        self.clock = clock
        self.scheduler = scheduler
        self.chain = chain
        self.mempool = mempool
        self.gossip = gossip
        self.presence = presence
        self.peering = peering
        self.policy = policy
        self.sync = sync
        self.entropy = entropy
        self.sigs = sigs
        self.run = BlockRun(sigs)
        self.no_early: dict[bytes, float] = {}  # producer -> until when: full check first
        # set by the core: snapshot availability (snapshot_gossip.py) and the onboarding hold
        self.snapshot_announce: Callable[[bytes, int], tuple[str, str]] = lambda _d, _t: (
            "ignore",
            "",
        )
        self.hold_blocks: Callable[[], bool] = lambda: False
        # gossip and API transactions: signatures in batches at the pool (txbatch.py)
        batcher = TxBatcher(sigs.prove_later, scheduler, sigs.min_batch, on_error=log_error(self))
        self.txs = TxIntake(self, batcher)
        # blocks as header + tx ids to version-3 peers, rebuilt from the mempool (compact.py)
        self.compact = CompactRelay(self)
        mempool.on_evict = lambda tx: self.compact.remember([tx])

    # -- gossip payloads -------------------------------------------------------------------

    def on_publish(self, conn: Link, topic: str, data: bytes) -> None:
        assert conn.peer_id is not None
        mid, _rec, first = self.gossip.receive(conn.peer_id, topic, data)
        if not first:
            self.metrics.gossip_duplicates.labels(topic).inc()
            return
        if topic == TOPIC_BLOCKS:
            early = self.forward_early(conn, mid, data)
            outcome = self.apply_block(conn, data, "gossip", early)
            verdict = {"accepted": "accept", "rejected": "reject"}.get(outcome, "ignore")
            if early is not None:  # forwarded already: record the verdict, send nothing more
                if verdict == "reject":
                    self.gossip.seen[mid].verdict = "reject"
                return
        elif topic == TOPIC_TXS:
            self.txs.gossip(conn, mid, data)  # verdict and forwarding once its batch is back
            return
        elif topic == TOPIC_SNAPSHOTS:
            verdict, why = self.snapshot_announce(data, self.clock.wall_ms())
            if verdict == "reject":
                self.policy.penalize(conn, PENALTY_INVALID, f"invalid snapshot announce ({why})")
        elif topic == TOPIC_PRESENCE:
            verdict, why = self.presence.on_beacon(data, self.clock.wall_ms())
            if verdict == "reject":
                self.policy.penalize(conn, PENALTY_INVALID, f"invalid presence beacon ({why})")
        else:
            verdict = "reject"
        self.forward(conn, topic, self.gossip.validated(mid, data, verdict))

    def forward(self, conn: Link, topic: str, sends: list[Send]) -> None:
        """Send a received message on to the mesh, recording what this hop held it: from the
        read that completed its frame to the last write (``forward_hold_seconds``), and for a
        block the bytes already queued ahead of it on each peer (``forward_backlog_bytes``)."""
        if not sends:
            return
        if topic == TOPIC_BLOCKS:
            sends = self.compact.outgoing(sends)
            for pid, _msg in sends:
                peer = self.peering.conns.get(pid)
                if peer is not None:
                    self.metrics.forward_backlog_bytes.observe(peer.send_backlog)
        self.peering.send_all(sends)
        hold = max(0.0, self._now() - conn.last_recv)
        self.metrics.forward_hold_seconds.labels(topic).observe(hold)

    # -- blocks ----------------------------------------------------------------------------

    def forward_early(self, conn: Link, mid: bytes, raw: bytes) -> Block | None:
        """Propagation at the bound: a gossiped block that extends our tip and passes the
        cheap rules (validation.check_block_cheap: producer signature, slot and schedule,
        Merkle root — no transaction signature) goes to the mesh now, before its full check.
        Its transactions are then exactly what its producer signed, so a full check that fails
        is the producer's doing: it is penalized and its blocks wait for the full check for
        ``ban_seconds`` (``early_failed``). Returns the decoded block when forwarded."""
        chain = self.chain
        try:
            block = decode_block(raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        producer = block.header.producer
        if not self.cfg.early_forward or block.height != chain.height + 1:
            return None
        if self.no_early.get(producer, 0) > self._now():
            return None
        try:
            check_block_cheap(block, chain.view(), chain.params, self.clock.wall_ms(), len(raw))
        except ValidationError:
            return None
        self.metrics.blocks_forwarded_early.inc()
        self.forward(conn, TOPIC_BLOCKS, self.gossip.validated(mid, raw, "accept"))
        return block

    def _now(self) -> float:
        return self.clock.monotonic()

    def early_failed(self, block: Block, reason: str) -> None:
        producer = block.header.producer
        self.no_early[producer] = self._now() + self.cfg.ban_seconds
        self.metrics.early_forward_failed.inc()
        self.log.warning(
            "early_forward_failed",
            f"block {block.height} from producer {short(producer)} passed the cheap checks and "
            f"was forwarded, then failed its full check ({reason}): producer penalized, its "
            f"blocks are forwarded only after the full check for {self.cfg.ban_seconds:g} s",
            height=block.height,
            producer=producer.hex(),
            reason=reason,
        )
        conn = self.peering.conns.get(producer)
        if conn is not None:
            self.policy.penalize(conn, PENALTY_INVALID, f"produced an invalid block ({reason})")

    def apply_block(
        self,
        conn: Link | None,
        raw: bytes,
        source: str,
        early: Block | None = None,
        next_raw: bytes | None = None,
    ) -> str:
        """Validate and commit one encoded block. Returns accepted | duplicate | orphan |
        ignored | rejected; scores ``conn`` for invalid blocks — or, for a block we forwarded
        early (``early``, decoded), its producer instead. ``next_raw``: the next block of a run,
        whose signatures go to the pool while this one's rules run (blockrun.py)."""
        chain = self.chain
        self.metrics.blocks_received.labels(source).inc()
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            block = early or self.run.decoded(raw) or decode_block(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            self.reject_block(conn, None, "format", f"block does not decode: {e}")
            return "rejected"
        if source == "gossip" and self.hold_blocks():
            return "ignored"  # onboarding from a snapshot: blocks wait until the state is in
        if source == "gossip":
            delay_s = (self.clock.wall_ms() - block.header.timestamp_ms) / 1000
            self.metrics.gossip_first_seen_delay.labels(TOPIC_BLOCKS).observe(max(0.0, delay_s))
            ahead = block.height - chain.height
            far = conn is not None and ahead > self.cfg.sync_parallel_min
            # An authentic block far ahead is a verified height claim for sync, not an orphan.
            if far and conn is not None and self.sync.saw_tip(conn, block):
                self.log.info(
                    "block_far_ahead",
                    f"gossiped block {block.height} is {ahead} blocks ahead of our tip: "
                    "syncing to it instead of holding it as an orphan",
                    height=block.height,
                    tip=chain.height,
                )
                return "ignored"
        if chain.store.pending_blocks >= MAX_PENDING_BLOCKS:
            return "ignored"  # the disk is behind (a locked database); sync fetches it later
        proofs = self.run.proofs(raw, block)  # a big block: every core
        if next_raw is not None:
            self.run.send_ahead(next_raw)
        with preverified(proofs()):
            res = chain.submit(block, len(raw))
        self.metrics.validation_seconds.labels("block").observe(time.perf_counter() - t0)
        self.metrics.validation_cpu_seconds.labels("block").inc(time.thread_time() - c0)
        if res.duplicate:
            return "duplicate"
        if res.orphaned:
            self.metrics.orphans.set(len(chain.orphans))
            self.log.info(
                "block_orphaned",
                f"block {block.height} {short(block.hash)} held as "
                f"orphan: {res.error.detail if res.error else ''}; requesting the gap",
                height=block.height,
                hash=block.hash.hex(),
                tip=chain.height,
            )
            if conn is not None:
                self.sync.request_gap(conn, block.height)
            return "orphan"
        if res.error is not None:
            stale = isinstance(res.error, BadPrevHash) and block.height <= chain.height
            if early is not None:  # the sender may have forwarded it early too, as we did
                self.reject_block(None, block, res.error.reason, res.error.detail)
                self.early_failed(block, res.error.reason)
                return "rejected"
            self.reject_block(None if stale else conn, block, res.error.reason, res.error.detail)
            if source == "sync" and conn is not None and res.error.reason in FORGERY_REASONS:
                # no honest node stores, so none serves, a block whose hash or producer
                # signature is wrong: a forged sync answer is proof, not a score matter
                self.policy.ban(
                    conn, f"sync: served block {block.height} with a bad {res.error.reason}"
                )
            return "ignored" if stale else "rejected"
        for b in res.accepted:
            self.committed(b, source)
        if conn is not None:
            self.sync.saw_height(conn, res.accepted[-1].height)
        return "accepted"

    def apply_branch(self, conn: Link, raws: list[bytes]) -> str:
        """A peer's competing branch: adopt it if it is longer and valid (fork choice)."""
        chain = self.chain
        try:
            blocks = [decode_block(raw) for raw in raws]
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            self.reject_block(conn, None, "format", f"branch block does not decode: {e}")
            return "rejected"
        old_height, old_tip = chain.height, chain.tip_hash
        res = chain.reorg(blocks, self.cfg.max_reorg_depth)
        if res.error is not None:
            # A branch that no longer attaches (its chain moved between our two requests) or
            # is too deep is not misbehaviour; an invalid block in it is.
            honest = res.error.reason in ("orphan", "reorg_depth")
            self.reject_block(
                None if honest else conn,
                None,
                res.error.reason,
                f"competing branch: {res.error.detail}",
            )
            return "ignored" if honest else "rejected"
        if not res.adopted:
            return "ignored"
        self.metrics.reorgs.inc()
        self.metrics.reorg_depth.observe(res.depth)
        self.log.warning(
            "reorg",
            f"switched to a longer branch from peer {short(conn.peer_id or b'')}: tip "
            f"{old_height} {short(old_tip)} -> {chain.height} {short(chain.tip_hash)}, "
            f"{res.depth} blocks replaced (longest valid chain wins)",
            depth=res.depth,
            old_height=old_height,
            old_tip=old_tip.hex(),
            height=chain.height,
            tip=chain.tip_hash.hex(),
        )
        for b in res.adopted:
            self.committed(b, "reorg")
        for b in res.dropped:  # their transactions are valid again unless the branch has them
            for tx in b.txs:
                txid = tx.txid()
                if not chain.store.has_tx(txid):
                    self.mempool.add(txid, tx, len(tx.encode()))
        self.metrics.mempool_txs.set(len(self.mempool))
        self.sync.saw_height(conn, chain.height)
        return "accepted"

    def reject_block(
        self, conn: Link | None, block: Block | None, reason: str, detail: str
    ) -> None:
        self.metrics.blocks_rejected.labels(reason).inc()
        if block is not None:  # relayed compact before its full check: no longer served
            self.compact.forget(block.hash)
        who = short(conn.peer_id) if conn is not None and conn.peer_id else "-"
        self.log.warning(
            "block_rejected",
            f"{detail} (from peer {who})",
            reason=reason,
            height=block.height if block else None,
            hash=block.hash.hex() if block else None,
            peer=conn.peer_id.hex() if conn is not None and conn.peer_id else None,
        )
        if conn is not None:
            self.policy.penalize(conn, PENALTY_INVALID, f"invalid block ({reason})")

    def committed(self, b: Block, source: str) -> None:
        self.metrics.blocks_validated.inc()
        self.metrics.height.set(self.chain.height)
        self.metrics.orphans.set(len(self.chain.orphans))
        self.mempool.remove_committed(b.txs)
        if source in ("gossip", "local") and self.compact.keeps_recent:
            self.compact.remember(b.txs)  # a competing block at the tip may name them too
        self.metrics.mempool_txs.set(len(self.mempool))
        self.on_height(b)
        self.log.info(
            "block_committed",
            f"block {b.height} {short(b.hash)} committed from "
            f"{source}: producer {short(b.header.producer)}, {len(b.txs)} txs",
            height=b.height,
            hash=b.hash.hex(),
            producer=b.header.producer.hex(),
            txs=len(b.txs),
            source=source,
        )

    def committed_segment(self, blocks: list[Block], source: str) -> None:
        self.metrics.blocks_validated.inc(len(blocks))
        self.metrics.sync_blocks_committed.inc(len(blocks))
        self.metrics.height.set(self.chain.height)
        self.mempool.remove_committed([t for b in blocks for t in b.txs])
        self.metrics.mempool_txs.set(len(self.mempool))
        self.log.info(
            "segment_committed",
            f"blocks {blocks[0].height}..{blocks[-1].height} verified in order and committed "
            f"in one transaction from {source}",
            first=blocks[0].height,
            last=blocks[-1].height,
            tip=blocks[-1].hash.hex(),
            source=source,
        )
        # One entropy check for the segment at most: for its last boundary, and only if this
        # segment ended the catch-up (earlier boundaries are history, verified in the segment).
        L = self.chain.params.epoch_length
        last_boundary = [b for b in blocks if b.height % L == 0][-1:]
        for b in last_boundary or blocks[-1:]:
            self.on_height(b)

    def on_height(self, b: Block) -> None:
        """Every committed block: an epoch boundary starts an entropy check (not during a bulk
        catch-up — those boundaries are history, verified as part of the segment)."""
        if self.entropy.deferred:
            self.entropy.on_height()
        L = self.chain.params.epoch_length
        if b.height == 0 or b.height % L or self.sync.active:
            return
        self.entropy.on_boundary(b.height)
        self.scheduler.call_later(self.cfg.entropy_timeout_ms / 1000 + 0.005, self.entropy.tick)

    # -- transactions ----------------------------------------------------------------------

    def accept_tx(self, tx: Tx, source: str, conn: Link | None, size: int) -> str:
        """Validate a transaction into the mempool. Returns accept | ignore | reject."""
        t0, c0 = time.perf_counter(), time.thread_time()
        if source == "gossip":
            self.metrics.gossip_first_seen_delay.labels(TOPIC_TXS).observe(
                max(0.0, (self.clock.wall_ms() - tx.timestamp_ms) / 1000)
            )
        txid = tx.txid()
        if source == "gossip" and self.unwanted_tx(tx, txid) is not None:
            # Known, its nonce taken, or stale: ignored whatever its signature, so checked
            # first — a peer replaying such txs (valid signatures, spent nonces) costs us a
            # lookup, not a signature check (audit, issue 12). No penalty: an honest relay may
            # have sent it before the block that overtook it.
            return "ignore"
        try:
            check_tx(tx, self.chain.params, size)
        except ValidationError as e:
            self.reject_tx(conn, e.reason, e.detail)
            return "reject"
        finally:
            self.metrics.validation_seconds.labels("tx").observe(time.perf_counter() - t0)
            self.metrics.validation_cpu_seconds.labels("tx").inc(time.thread_time() - c0)
        if source != "gossip":
            why = self.unwanted_tx(tx, txid)
            if why is not None:
                if source == "api" and why.reason != "known":  # an error for a local client
                    self.reject_tx(None, why.reason, why.detail)
                    return "reject"
                return "ignore"
        if not self.mempool.add(txid, tx, size):
            self.metrics.limit_hits.labels("mempool").inc()
            return "ignore"
        self.metrics.txs_validated.inc()
        self.metrics.mempool_txs.set(len(self.mempool))
        self.log.debug(
            "tx_accepted",
            f"tx {short(txid)} accepted into the mempool from {source}",
            txid=txid.hex(),
            source=source,
        )
        return "accept"

    def unwanted_tx(self, tx: Tx, txid: bytes) -> ValidationError | None:
        """Why ``tx`` is not for our mempool whatever its signature: known (reason "known"),
        its sender's nonce taken by one we hold (first seen wins, mempool.py), or stale on the
        tip's state; None if it is wanted."""
        if self.chain.store.has_tx(txid) or txid in self.mempool:
            return Known("already known")
        if self.mempool.holder(tx) is not None:
            return NonceTaken(
                f"a transaction of sender {short(tx.sender)} with nonce {tx.nonce} is already "
                "waiting in the mempool"
            )
        return self.stale_tx(tx)

    def stale_tx(self, tx: Tx) -> ValidationError | None:
        """Why ``tx`` cannot apply on the tip's state (nonce below the sender's, or more than
        it holds), None if it can."""
        try:
            execute(tx, Overlay(self.chain.ledger))
        except ValidationError as e:
            return e
        return None

    def reject_tx(self, conn: Link | None, reason: str, detail: str) -> None:
        self.metrics.txs_rejected.labels(reason).inc()
        self.log.info(
            "tx_rejected",
            f"tx rejected: {detail}",
            reason=reason,
            peer=conn.peer_id.hex() if conn is not None and conn.peer_id else None,
        )
        if conn is not None:
            self.policy.penalize(conn, PENALTY_INVALID, f"invalid tx ({reason})")

    def submit_local_tx(self, tx: Tx) -> tuple[str, bytes]:
        """Validate inline (in-process callers), add to the mempool, publish to the mesh."""
        return self.submit_checked(tx, tx.encode())

    def submit_local_tx_later(self, tx: Tx, done: Callable[[str, bytes], None]) -> None:
        """POST /tx: ``submit_local_tx`` with its signature in a batch (txbatch.py);
        ``done(verdict, txid)`` on the loop; "busy" when the batch is full, "error" if it raised."""
        self.txs.api(tx, done)

    def submit_checked(self, tx: Tx, data: bytes) -> tuple[str, bytes]:
        verdict = self.accept_tx(tx, "api", None, len(data))
        if verdict == "accept":
            _, sends = self.gossip.publish(TOPIC_TXS, data)
            self.peering.send_all(sends)
        return verdict, tx.txid()
