"""Compact block relay (BIP152's high-bandwidth mode in shape), without I/O.

Sending (``compact_blocks`` on): a block for the mesh goes to a version-3 peer as a
``CompactBlock`` — header, hash, producer signature and the full 32-byte ids of its
transactions (no short ids: nothing to collide) — instead of the full ``pub``; other peers get
the full block as before (``outgoing``). The block is kept (``relayed``) to answer what the
peer asks for next, before it is committed.

Receiving (on any version-3 connection, whatever our own setting): the header's hash and the
ids' Merkle root and count are checked against the header first — ids that do not match it
are an invalid block from that peer (``Ingest.reject_block``, the same penalty and gossip
score as a full invalid block) — except for a copy of a block already here or pending, a
duplicate told by the header's hash alone, before the Merkle root; before anything is asked
for, the producer's signature and its place among the genesis validators are checked too, so
only a validator's key can make us hold a reconstruction open. The block is rebuilt from the
mempool and a small cache of transactions recently evicted or committed (and gossiped ones
still waiting for their signature batch, txbatch.py); the ones missing are asked from the
sender by index (``GetBlockTxn``) and checked against their ids when they come (``BlockTxn``).
A missing
answer (``compact_timeout_s``), a "not held" one (empty) or a wrong one (penalized) ends in a
full-block fetch (``GetBlocksByHash``) from another peer that announced the block, the sender
last; a late or failed fetch tries the next, until none is left, then one more timeout is
waited (a peer announcing the block meanwhile is asked at once) before it is given up. An
answer that comes after its timeout still completes the reconstruction while it is in
progress (a loaded peer is slow, not wrong); a peer with getblocktxn timeouts on record
(``UNANSWERED_MAX``) is not penalized — a timeout is no evidence of wrongdoing — but no longer
waited on: the next announcer is asked at once too (``parallel_ask``). A rebuilt (or fetched) block
takes exactly the path of a gossiped full block (``Ingest.on_publish``): its canonical
encoding is the producer's, so its gossip message id, dedup, early forward and full check are
the same. Pending reconstructions are bounded per announcing peer and in total
(``limit_hits{limit="compact_pending_peer"|"compact_pending"}``).
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgspec

from netdiag.node.compact_send import CompactSending
from netdiag.node.errors import ValidationError
from netdiag.node.gossip import message_id
from netdiag.node.link import Link
from netdiag.node.messages import (
    TOPIC_BLOCKS,
    Blocks,
    BlockTxn,
    CompactBlock,
    GetBlocksByHash,
    GetBlockTxn,
)
from netdiag.node.model import Block, BlockHeader, Tx, decode_block, decode_tx, merkle_root
from netdiag.node.policy import PENALTY_INVALID
from netdiag.node.recent_txs import RecentTxs
from netdiag.node.unanswered import Unanswered
from netdiag.node.validation import WrongProducer, check_header

if TYPE_CHECKING:
    from netdiag.node.ingest import Ingest

REQ_ID_BASE = 1 << 46  # apart from sync (1, 1 << 40), onboarding (1 << 44), entropy (1 << 50)
DONE_MAX = 256  # hashes rebuilt or fetched: a later compact copy is a duplicate
MAX_SOURCES = 8  # peers remembered per pending block as full-block fallbacks
PENALTY_UNSOLICITED = 5.0  # an answer to nothing we asked
# getblocktxn left unanswered past compact_timeout_s, counted per peer. Any answer to one of
# our getblocktxn takes one off — late (even after the block was done with), "not held" (empty)
# or wrong (penalized for that, not for being slow) — and the count halves every
# score_half_life_s. No penalty: a timeout is a loaded or far peer, not evidence of wrongdoing.
# From UNANSWERED_MAX on record the peer, still asked first, is no longer waited on: the next
# peer to announce the block is asked at once too, so a first announcer that never answers
# delays blocks no longer.
UNANSWERED_MAX = 2
FINISHED_TXN_MAX = 1024  # getblocktxn ids of blocks done with -> peer asked, for late credit


@dataclass
class Pending:
    """One block being rebuilt: what we have, whom we asked, who else announced it."""

    hash: bytes
    header: BlockHeader
    signature: bytes
    txs: list[Tx | None]
    txids: list[bytes]
    first: Link  # the peer whose compact block we are rebuilding
    req_id: int  # the request whose timeout moves it on (a "wait" id is never sent)
    stage: str  # txn (GetBlockTxn to ``first``) | full (GetBlocksByHash) | wait (last call)
    rids: set[int] = field(default_factory=set)  # its requests not answered yet (late too)
    sources: list[Link] = field(default_factory=list)  # others that announced it
    tried: set[bytes] = field(default_factory=set)  # peer ids asked for the full block
    bad: set[bytes] = field(default_factory=set)  # peer ids that answered wrongly
    dups: int = 0  # compact copies from other peers meanwhile

    def missing(self) -> list[int]:
        return [i for i, t in enumerate(self.txs) if t is None]


class CompactRelay(CompactSending):
    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest
        cfg = ingest.cfg
        self.enabled = cfg.compact_blocks
        self.relayed: OrderedDict[bytes, Block] = OrderedDict()  # sent compact (compact_send.py)
        self.timeout_s = cfg.compact_timeout_s
        self.per_peer = cfg.compact_pending_per_peer
        self.max_pending = cfg.compact_pending_max
        self.pending: dict[bytes, Pending] = {}  # block hash -> reconstruction
        # request -> (block hash, peer asked, txn | full), kept until answered or the block is
        # done with: an answer after its timeout still completes a reconstruction in progress
        self.reqs: dict[int, tuple[bytes, Link, str]] = {}
        # block hash -> gossip message id (b"": not delivered by us) of blocks done with
        self.done: OrderedDict[bytes, bytes] = OrderedDict()
        # txs no longer pooled (evicted, committed), bounded in count and bytes
        self.recent = RecentTxs(
            cfg.compact_recent_txs,
            cfg.compact_recent_bytes,
            ingest.metrics.limit_hits.labels("compact_recent_bytes").inc,
        )
        self.waits: dict[int, bytes] = {}  # last-call timer id -> block hash
        # the clock looked up at each read: tests swap the ingest's clock
        self.ledger = Unanswered(lambda: self.ingest.clock.monotonic(), cfg.score_half_life_s)
        self.unanswered = self.ledger.counts  # peer id -> txn timeouts on record
        # getblocktxn ids still unanswered when their block was done with -> peer id asked: a
        # late answer to one is still credited (oldest forgotten past FINISHED_TXN_MAX)
        self.finished_txn: OrderedDict[int, bytes] = OrderedDict()
        self._ids = itertools.count(REQ_ID_BASE)
        self._last_id = REQ_ID_BASE - 1

    # -- the recent-tx cache ---------------------------------------------------------------

    @property
    def keeps_recent(self) -> bool:
        return self.recent.enabled

    def remember(self, txs: Iterable[Tx]) -> None:
        """Transactions leaving the mempool (evicted, committed): a block may still name them
        (oldest dropped first past ``compact_recent_txs`` or ``compact_recent_bytes``, the
        latter counted as ``limit_hits{limit="compact_recent_bytes"}``)."""
        self.recent.add(txs)

    def _lookup(self, txid: bytes) -> Tx | None:
        ing = self.ingest
        return ing.mempool.get(txid) or ing.txs.waiting.get(txid) or self.recent.get(txid)

    # -- receiving -------------------------------------------------------------------------

    def on_compact(self, conn: Link, msg: CompactBlock) -> None:
        ing = self.ingest
        m = ing.metrics.compact_blocks
        m.labels("received").inc()
        try:
            header = msgspec.msgpack.decode(msg.header, type=BlockHeader)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            self._refuse(conn, "format", f"compact block header does not decode: {e}")
            return
        h = msg.hash
        if header.compute_hash() != h:
            self._refuse(conn, "hash", f"compact block {header.height}: hash is not its header's")
            return
        # A copy of a block here or on its way is a duplicate, told by its header's hash alone
        # (cheap) before the Merkle root over all its ids: replays cost no more than a full
        # block's dedup. Its ids are not looked at: the block is known by that hash.
        if h in self.done or ing.chain.store.has_block(h):
            self._duplicate(h)
            return
        p = self.pending.get(h)
        if p is not None:
            self._duplicate(h, p)
            if conn is not p.first and conn not in p.sources and len(p.sources) < MAX_SOURCES:
                p.sources.append(conn)
                if p.stage == "wait":  # every source had failed: a new one is asked at once
                    self._ask_full(p)
                elif self._asked_distrusted(p):  # and so is one while a non-answerer is asked
                    m.labels("parallel_ask").inc()
                    if p.stage == "txn":
                        conn.send(GetBlockTxn(self._request(p, conn, "txn"), h, p.missing()))
                    else:
                        self._ask_full(p)
            return
        if len(msg.txids) > ing.chain.params.max_block_txs:
            self._refuse(conn, "size", f"compact block {header.height}: {len(msg.txids)} txs")
            return
        if len(msg.txids) != header.tx_count or merkle_root(msg.txids) != header.tx_root:
            self._refuse(
                conn,
                "merkle_root",
                f"compact block {header.height} {h[:6].hex()}: its {len(msg.txids)} tx ids do "
                "not match the header's tx root and count",
            )
            return
        if ing.hold_blocks():
            return  # onboarding from a snapshot: blocks wait until the state is in
        txs = [self._lookup(t) for t in msg.txids]
        missing = [i for i, t in enumerate(txs) if t is None]
        if not missing:
            m.labels("rebuilt").inc()
            block = Block(header, h, msg.signature, [t for t in txs if t is not None])
            self._deliver(conn, block.encode(), None, h)
            return
        # Before we ask for anything or hold a slot for it: signed by a genesis validator (one
        # signature check), so only a validator's key can make us wait on a block.
        try:
            check_header(header, h, msg.signature)
            if header.producer not in ing.chain.genesis.validators:
                raise WrongProducer(f"producer {header.producer[:6].hex()} is not a validator")
        except ValidationError as e:
            self._refuse(conn, e.reason, f"compact block {header.height}: {e.detail}")
            return
        lim = ing.metrics.limit_hits
        if len(self.pending) >= self.max_pending:
            lim.labels("compact_pending").inc()
            return  # gossip (IHAVE) or sync brings it later
        if sum(q.first is conn for q in self.pending.values()) >= self.per_peer:
            lim.labels("compact_pending_peer").inc()
            return
        p = self.pending[h] = Pending(
            h, header, msg.signature, txs, list(msg.txids), conn, 0, "txn"
        )
        m.labels("txn_requested").inc()
        ing.metrics.compact_missing_txs.inc(len(missing))
        conn.send(GetBlockTxn(self._request(p, conn, "txn"), h, missing))

    def on_blocktxn(self, conn: Link, msg: BlockTxn) -> None:
        ing = self.ingest
        p = self._answered(conn, msg.req_id, "txn", "blocktxn")
        if p is None:
            return
        current = msg.req_id == p.req_id  # else late: the reconstruction has moved on
        pid = conn.peer_id or b""
        if ing.chain.store.has_block(p.hash):  # it came in full meanwhile
            self._finish(p)
            return
        if not msg.txs:
            if current:
                self._fallback(p, "not_held")
            return
        missing = p.missing()
        why = ""
        if len(msg.txs) != len(missing):
            why = f"{len(msg.txs)} txs for {len(missing)} asked"
        else:
            for i, data in zip(missing, msg.txs, strict=True):
                try:
                    tx = decode_tx(data)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    why = f"tx {i} does not decode"
                    break
                if tx.txid() != p.txids[i]:
                    why = f"tx {i} is not the one the block names"
                    break
                p.txs[i] = tx
        if why:
            p.bad.add(pid)
            ing.policy.penalize(conn, PENALTY_INVALID, f"invalid blocktxn answer ({why})")
            ing.log.warning(
                "compact_bad_answer",
                f"peer {pid[:6].hex()} answered our request for block {p.header.height}'s "
                f"missing txs wrongly ({why}): penalized, fetching the full block elsewhere",
                height=p.header.height,
                hash=p.hash.hex(),
                peer=pid.hex(),
            )
            for i in missing:  # what it sent is not trusted, not even the txs that matched
                p.txs[i] = None
            if current:
                self._fallback(p, "bad_answer")
            return
        ing.metrics.compact_blocks.labels("txn_ok").inc()
        block = Block(p.header, p.hash, p.signature, [t for t in p.txs if t is not None])
        self._deliver(conn, block.encode(), p)

    def owns(self, req_id: int) -> bool:
        """A Blocks answer to one of our full-block fallbacks (in flight or late)."""
        return REQ_ID_BASE <= req_id <= self._last_id

    def on_blocks(self, conn: Link, msg: Blocks) -> None:
        ing = self.ingest
        p = self._answered(conn, msg.req_id, "full", "blocks")
        if p is None:
            return
        current = msg.req_id == p.req_id
        if ing.chain.store.has_block(p.hash):
            self._finish(p)
            return
        if not msg.blocks:
            if current:
                self._fallback(p, "not_held")
            return
        try:
            block = decode_block(msg.blocks[0]) if len(msg.blocks) == 1 else None
        except (msgspec.DecodeError, msgspec.ValidationError):
            block = None
        if block is None or block.hash != p.hash:
            p.bad.add(conn.peer_id or b"")
            ing.policy.penalize(conn, PENALTY_INVALID, "getblocksbyhash: not the block asked")
            if current:
                self._fallback(p, "bad_answer")
            return
        ing.metrics.compact_blocks.labels("fetched").inc()
        self._deliver(conn, msg.blocks[0], p)

    # -- timeouts and fallback -------------------------------------------------------------

    def _request(self, p: Pending, conn: Link, kind: str) -> int:
        """A new request of ``p`` to ``conn``: it becomes the current one, its timer armed."""
        rid = self._next_id()
        p.req_id, p.stage = rid, kind
        p.rids.add(rid)
        self.reqs[rid] = (p.hash, conn, kind)
        self._arm(rid)
        return rid

    def _answered(self, conn: Link, rid: int, kind: str, what: str) -> Pending | None:
        """The reconstruction an answer belongs to (its request now answered), or None."""
        req = self.reqs.get(rid)
        p = self.pending.get(req[0]) if req is not None else None
        if req is None or p is None or req[1] is not conn or req[2] != kind:
            self._stray(conn, rid, what)
            return None
        del self.reqs[rid]
        p.rids.discard(rid)
        if kind == "txn":  # answered, late or not, "not held" or wrong: not unanswered
            self.ledger.credit(conn.peer_id or b"")
        if rid != p.req_id:
            self.ingest.metrics.compact_blocks.labels("late_answer").inc()
        return p

    def _arm(self, rid: int) -> None:
        self.ingest.scheduler.call_later(self.timeout_s, lambda: self._expire(rid))

    def _expire(self, rid: int) -> None:
        req = self.reqs.get(rid)
        p = self.pending.get(req[0]) if req is not None else None
        if req is not None and p is not None and req[2] == "txn":
            self._unanswered(req[1], p)
        if p is not None and p.req_id == rid:  # still the current request: move on
            self._fallback(p, "timeout")
        elif rid in self.waits:
            p = self.pending.get(self.waits.pop(rid))
            if p is not None and p.req_id == rid:
                self._give_up(p)

    def _unanswered(self, conn: Link, p: Pending) -> None:
        """``conn`` let a getblocktxn for ``p`` time out (while the block was still needed):
        counted, not penalized."""
        if self.ingest.chain.store.has_block(p.hash):
            return
        self.ingest.metrics.compact_blocks.labels("txn_unanswered").inc()
        self.ledger.add(conn.peer_id or b"")

    def unanswered_count(self, pid: bytes) -> int:
        return self.ledger.count(pid)

    def _asked_distrusted(self, p: Pending) -> bool:
        """``p``'s current request went to a peer with UNANSWERED_MAX getblocktxn timeouts."""
        req = self.reqs.get(p.req_id)
        if req is None:
            return False
        return self.unanswered_count(req[1].peer_id or b"") >= UNANSWERED_MAX

    def _fallback(self, p: Pending, why: str) -> None:
        ing = self.ingest
        if ing.chain.store.has_block(p.hash):  # it came in full meanwhile: no fallback
            self._finish(p)
            return
        ing.metrics.compact_blocks.labels(f"fallback_{why}").inc()
        self._ask_full(p)

    def _ask_full(self, p: Pending) -> None:
        """Fetch the full block from the next peer that announced it (the sender last); with
        none left, wait one more timeout for late answers and new announcers, then give up."""
        skip = p.tried | p.bad
        cands = [c for c in [*p.sources, p.first] if c.is_open and (c.peer_id or b"") not in skip]
        if cands:
            conn = cands[0]
            p.tried.add(conn.peer_id or b"")
            conn.send(GetBlocksByHash(self._request(p, conn, "full"), [p.hash]))
        elif p.stage != "wait":
            rid = self._next_id()  # never sent: only its timer
            p.req_id, p.stage = rid, "wait"
            self.waits[rid] = p.hash
            self._arm(rid)

    def _give_up(self, p: Pending) -> None:
        ing = self.ingest
        if ing.chain.store.has_block(p.hash):  # it came in full meanwhile: not a failure
            self._finish(p)
            return
        ing.metrics.compact_blocks.labels("failed").inc()
        ing.log.info(
            "compact_failed",
            f"block {p.header.height} {p.hash[:6].hex()}: no peer answered with it in time; "
            "gossip or sync brings it",
            height=p.header.height,
            hash=p.hash.hex(),
        )
        self._finish(p, None)

    # -- helpers ---------------------------------------------------------------------------

    def _deliver(self, conn: Link, raw: bytes, p: Pending | None, h: bytes = b"") -> None:
        """``raw`` (rebuilt or fetched) down the full block's path, as if gossiped by ``conn``;
        compact copies counted meanwhile become the gossip record's duplicates."""
        mid = message_id(raw)
        if p is not None:
            self._finish(p, mid)
        else:
            self._done(h, mid)
        self.ingest.on_publish(conn, TOPIC_BLOCKS, raw)
        rec = self.ingest.gossip.seen.get(mid)
        if p is not None and p.dups and rec is not None:
            rec.duplicates += p.dups

    def _duplicate(self, h: bytes, p: Pending | None = None) -> None:
        """A compact copy of a block already here or on its way: a gossip duplicate."""
        ing = self.ingest
        ing.metrics.compact_blocks.labels("duplicate").inc()
        ing.metrics.gossip_duplicates.labels(TOPIC_BLOCKS).inc()
        if p is not None:
            p.dups += 1
            return
        rec = ing.gossip.seen.get(self.done.get(h) or b"")
        if rec is not None:
            rec.duplicates += 1

    def _finish(self, p: Pending, mid: bytes | None = b"") -> None:
        """``p`` ends: delivered (``mid``), or given up (None: a later copy starts again)."""
        self.pending.pop(p.hash, None)
        for rid in p.rids:
            req = self.reqs.pop(rid, None)
            if req is not None and req[2] == "txn":  # its answer may still come: credited
                self.finished_txn[rid] = req[1].peer_id or b""
        while len(self.finished_txn) > FINISHED_TXN_MAX:
            self.finished_txn.popitem(last=False)
        p.rids.clear()
        self.waits.pop(p.req_id, None)
        if mid is not None:
            self._done(p.hash, mid)

    def _done(self, h: bytes, mid: bytes) -> None:
        self.done[h] = mid
        while len(self.done) > DONE_MAX:
            self.done.popitem(last=False)

    def _next_id(self) -> int:
        self._last_id = next(self._ids)
        return self._last_id

    def _stray(self, conn: Link, req_id: int, what: str) -> None:
        """An answer to a request we no longer wait for (late: unused, but a getblocktxn
        answer still counts as answered) or never made."""
        if not REQ_ID_BASE <= req_id <= self._last_id:
            self.ingest.policy.penalize(conn, PENALTY_UNSOLICITED, f"unsolicited {what}")
            return
        self.ingest.metrics.compact_blocks.labels("late_answer").inc()
        pid = conn.peer_id or b""
        if what == "blocktxn" and self.finished_txn.get(req_id) == pid:
            del self.finished_txn[req_id]
            self.ledger.credit(pid)

    def _refuse(self, conn: Link, reason: str, detail: str) -> None:
        """Ids or a header that do not match: the same as an invalid full block from it."""
        ing = self.ingest
        ing.metrics.compact_blocks.labels("refused").inc()
        ing.reject_block(conn, None, reason, detail)
        if conn.peer_id is not None:
            ing.gossip.count_invalid(conn.peer_id)
