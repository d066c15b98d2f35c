"""Producer: decides whether this validator may and should produce now, and produces.

A validator produces only while it hears a majority of the validator set (or the configured
peer minimum), is synchronized, its last entropy check agreed, a slot has passed since the tip
and the schedule names it for the current round.
"""

from __future__ import annotations

from netdiag.node.chain import Chain
from netdiag.node.config import NodeConfig
from netdiag.node.crypto import Identity
from netdiag.node.entropy import HashChain, next_mix
from netdiag.node.entropy_check import EntropyCheck
from netdiag.node.errors import ValidationError
from netdiag.node.genesis import GenesisSpec
from netdiag.node.gossip import GossipRouter
from netdiag.node.ingest import Ingest
from netdiag.node.logs import NodeLog
from netdiag.node.mempool import Mempool
from netdiag.node.messages import TOPIC_BLOCKS, TOPIC_PRESENCE
from netdiag.node.metrics import NodeMetrics
from netdiag.node.model import Block, Tx, entropy_of, make_block
from netdiag.node.peering import Peering
from netdiag.node.presence import Presence, make_beacon
from netdiag.node.runtime import Clock
from netdiag.node.state import Overlay, execute
from netdiag.node.store import MAX_PENDING_BLOCKS
from netdiag.node.window_sync import ParallelSync


def short(b: bytes) -> str:
    return b[:6].hex()


class Producer:
    def __init__(
        self,
        cfg: NodeConfig,
        log: NodeLog,
        metrics: NodeMetrics,
        clock: Clock,
        identity: Identity,
        genesis: GenesisSpec,
        chain: Chain,
        mempool: Mempool,
        gossip: GossipRouter,
        presence: Presence,
        peering: Peering,
        sync: ParallelSync,
        entropy: EntropyCheck,
        ingest: Ingest,
        entropy_chain: HashChain | None = None,
    ) -> None:
        self.cfg = cfg
        self.log = log
        self.metrics = metrics
        self.clock = clock
        self.identity = identity
        self.genesis = genesis
        self.chain = chain
        self.mempool = mempool
        self.gossip = gossip
        self.presence = presence
        self.peering = peering
        self.sync = sync
        self.entropy = entropy
        self.ingest = ingest
        self.entropy_chain = entropy_chain
        self.produced: set[tuple[int, int]] = set()
        self._no_reveal_logged = False

    def block_entropy(self, height: int) -> tuple[bytes, bytes] | None:
        """(reveal, mix) for our block at ``height`` on the current tip; empty on a network
        without entropy anchors; None if we cannot reveal (no secret, or past its span) —
        a block without the reveal would be invalid, so we do not produce."""
        if not self.genesis.entropy_anchors:
            return b"", b""
        try:
            if self.entropy_chain is None:
                raise ValueError("no entropy secret loaded")
            reveal = self.entropy_chain.reveal(height)
        except ValueError as e:
            if not self._no_reveal_logged:
                self._no_reveal_logged = True
                self.log.error("no_reveal", f"cannot produce: no entropy reveal ({e})")
            return None
        return reveal, next_mix(entropy_of(self.chain.tip), reveal)

    def validators_reachable(self) -> int:
        """Other validators we are connected to or heard a fresh beacon from."""
        return len(self.presence.reachable(set(self.peering.conns), self.identity.node_id))

    def quorum_connected(self) -> bool:
        """May we produce? Default: we hear from a strict majority of the validator set
        (counting ourselves) — directly connected, or through a fresh signed presence beacon
        gossiped across the mesh, so the rule scales past the dial target. Two groups cannot
        both hear a majority (beyond one beacon window), so validators that start apart, or
        are split by a partition, cannot build competing chains; a minority waits."""
        if self.cfg.min_peers_to_produce >= 0:
            return len(self.peering.conns) >= self.cfg.min_peers_to_produce
        return 1 + self.validators_reachable() > len(self.genesis.validators) // 2

    def beacon_step(self) -> None:
        """Tell the validator set we are alive (signed, fresh, gossiped through the mesh)."""
        data = make_beacon(self.identity, self.chain.genesis_hash, self.clock.wall_ms())
        _, sends = self.gossip.publish(TOPIC_PRESENCE, data)
        self.peering.send_all(sends)

    def _publish(self, block: Block) -> None:
        _, sends = self.gossip.publish(TOPIC_BLOCKS, block.encode())
        self.peering.send_all(self.ingest.compact.outgoing(sends))

    def select_txs(self) -> tuple[list[Tx], bytes]:
        """The mempool's transactions that apply on the tip's state, in nonce order (a
        sender's txs in sequence; any order across senders is valid), and the state root
        they leave. Those that cannot apply any more (replayed, superseded, unfunded) leave
        the mempool."""
        p = self.genesis.params
        candidates = self.mempool.take(p.max_block_txs, p.max_block_bytes - 4096)
        state = Overlay(self.chain.ledger)
        txs: list[Tx] = []
        dead: list[bytes] = []
        for t in sorted(candidates, key=lambda t: t.nonce):
            txid = t.txid()
            if self.chain.store.has_tx(txid):
                dead.append(txid)
                continue
            try:
                execute(t, state)
            except ValidationError:
                dead.append(txid)
                continue
            txs.append(t)
        self.mempool.remove(dead)
        return txs, state.root()

    def maybe_produce(self) -> None:
        chain = self.chain
        if not self.quorum_connected() or not self.sync.synchronized():
            return
        if chain.store.pending_blocks >= MAX_PENDING_BLOCKS:
            return  # the disk is behind (a locked database): no more blocks only in memory
        if not self.entropy.may_produce:
            return  # a failed entropy check: we may disagree on who produces
        now = self.clock.wall_ms()
        if now < chain.tip.header.timestamp_ms + self.genesis.params.slot_ms:
            return
        producer, height, round_ = chain.scheduled_producer(now)
        if producer != self.identity.node_id or (height, round_) in self.produced:
            return
        self.produced = {x for x in self.produced if x[0] >= height}  # bounded: this height only
        self.produced.add((height, round_))
        entropy = self.block_entropy(height)
        if entropy is None:
            return
        txs, state_root = self.select_txs()
        block = make_block(
            self.identity,
            self.genesis.network_id,
            height,
            chain.tip_hash,
            now,
            txs,
            *entropy,
            state_root=state_root,
        )
        res = chain.submit(block)
        if res.error is not None:
            self.log.error(
                "produce_failed",
                f"own block {height} failed validation: {res.error.detail}",
                reason=res.error.reason,
                height=height,
            )
            return
        self.metrics.blocks_produced.inc()
        for b in res.accepted:
            self.ingest.committed(b, "local")
        # Published once on disk: a producer that crashed before could sign another block
        # for the same height after its restart (commits are durable in milliseconds)
        chain.store.after_durable(lambda: self._publish(block))
        self.log.info(
            "block_produced",
            f"produced block {height} round {round_} with "
            f"{len(txs)} txs: our slot by entropy {short(chain.seed_hash(height))}",
            height=height,
            round=round_,
            txs=len(txs),
            hash=block.hash.hex(),
        )
