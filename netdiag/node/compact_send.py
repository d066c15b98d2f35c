"""The sending half of compact block relay (compact.py): full blocks for version-3 peers
replaced by their compact form, the blocks so sent kept (``relayed``, the last RELAYED_MAX) to
answer what those peers ask for next before they are committed, and ``getblocktxn`` answered.
A mixin of ``CompactRelay``, which owns the state."""

from __future__ import annotations

import itertools
from collections import OrderedDict
from typing import TYPE_CHECKING

import msgspec

from netdiag.node.gossip import Send
from netdiag.node.link import Link
from netdiag.node.messages import (
    TOPIC_BLOCKS,
    VERSION_COMPACT_BLOCKS,
    BlockTxn,
    CompactBlock,
    GetBlockTxn,
    Publish,
)
from netdiag.node.model import Block, decode_block
from netdiag.node.policy import PENALTY_INVALID

if TYPE_CHECKING:
    from netdiag.node.ingest import Ingest

RELAYED_MAX = 8  # blocks sent compact (<= 1 MiB each), kept to answer before they are committed


class CompactSending:
    ingest: Ingest
    enabled: bool
    relayed: OrderedDict[bytes, Block]

    def outgoing(self, sends: list[Send]) -> list[Send]:
        """``sends`` with each full block for a version-3 peer replaced by its compact form
        (when ``compact_blocks`` is on); everything else unchanged."""
        if not self.enabled:
            return sends
        conns = self.ingest.peering.conns
        built: dict[bytes, CompactBlock | None] = {}
        out: list[Send] = []
        for pid, msg in sends:
            if isinstance(msg, Publish) and msg.topic == TOPIC_BLOCKS:
                conn = conns.get(pid)
                if conn is not None and conn.version >= VERSION_COMPACT_BLOCKS:
                    if msg.data not in built:
                        built[msg.data] = self._compact(msg.data)
                    cb = built[msg.data]
                    if cb is not None:
                        self.ingest.metrics.compact_blocks.labels("sent").inc()
                        out.append((pid, cb))
                        continue
            out.append((pid, msg))
        return out

    def _compact(self, raw: bytes) -> CompactBlock | None:
        try:
            block = decode_block(raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        self.relayed[block.hash] = block
        self.relayed.move_to_end(block.hash)
        while len(self.relayed) > RELAYED_MAX:
            self.relayed.popitem(last=False)
        return CompactBlock(
            block.header.encode(), block.hash, block.signature, [t.txid() for t in block.txs]
        )

    def cached(self, h: bytes) -> Block | None:
        """A block we relayed compact (it may not be committed yet)."""
        return self.relayed.get(h)

    def forget(self, h: bytes) -> None:
        """A block that failed its full check (``Ingest.reject_block``): not served any more —
        a peer that fetched it from us would find it invalid and penalize us."""
        self.relayed.pop(h, None)

    def serve_txn(self, conn: Link, msg: GetBlockTxn) -> None:
        """Answer ``getblocktxn``: the txs at ``msg.indexes`` of a block we hold (relayed
        compact, or committed — the same exposure as ``getblocksbyhash``). The indexes must be
        strictly ascending and each below the block's tx count (so at most that many): anything
        else is a malformed request (penalized, empty answer). An answer over
        ``max_frame_bytes // 2`` (sync's per-answer budget) is refused with an empty answer,
        which the asker takes as "not held" and fetches the full block instead: a partial one
        would be a wrong answer to it. Served to graylisted peers like ``getblocksbyhash`` (a
        request, not gossip); nothing is built for a connection already closed (cut, banned)."""
        if not conn.is_open:
            return
        ing = self.ingest
        block = self.relayed.get(msg.block_hash) or ing.chain.store.block_by_hash(msg.block_hash)
        if block is None:
            conn.send(BlockTxn(msg.req_id, []))  # not held
            return
        n, idx = len(block.txs), msg.indexes
        why = ""
        if not idx or len(idx) > n:
            why = f"{len(idx)} indexes for a block of {n} txs"
        elif idx[0] < 0 or idx[-1] >= n:
            why = f"index out of range (block of {n} txs)"
        elif any(a >= b for a, b in itertools.pairwise(idx)):
            why = "indexes not strictly ascending"
        if why:
            ing.metrics.protocol_violations.labels("getblocktxn").inc()
            ing.policy.penalize(conn, PENALTY_INVALID, f"getblocktxn: {why}", violation=True)
            conn.send(BlockTxn(msg.req_id, []))
            return
        budget = ing.cfg.max_frame_bytes // 2
        out: list[bytes] = []
        for i in idx:
            raw = block.txs[i].encode()
            budget -= len(raw) + 8
            if budget < 0:
                ing.metrics.limit_hits.labels("getblocktxn_bytes").inc()
                conn.send(BlockTxn(msg.req_id, []))  # refused: the asker fetches it whole
                return
            out.append(raw)
        ing.metrics.compact_blocks.labels("txn_served").inc()
        conn.send(BlockTxn(msg.req_id, out))
