"""An honest first announcer whose getblocktxn answers come late (after another announcer's
full block finished the reconstruction) is credited for answering: its unanswered count does
not grow without bound, it is never penalized for being slow, and the count decays with time.
(Review 2: such a peer was penalized on every slow block, then banned.)"""

from __future__ import annotations

from pathlib import Path

from netdiag.node import compact as compact_mod
from netdiag.node.messages import Blocks, BlockTxn, GetBlocksByHash, GetBlockTxn
from tests.unit.node.test_compact import _missing_blocks, compact_of, give, sent, setup


def test_a_late_but_honest_answer_takes_one_off_the_unanswered_count(tmp_path: Path) -> None:
    timeout = 1.0
    world, keys, relay, src, _block = setup(tmp_path, n_txs=4, pooled=2, compact_timeout_s=timeout)
    compact = relay.ingest.compact
    pid = src.peer_id or b""
    other = world.attach(relay, host="10.4.4.4")
    for b in _missing_blocks(world, keys, 3):
        give(src, compact_of(b))  # src announces first and is asked
        give(other, compact_of(b))
        (ask,) = [m for m in sent(src, GetBlockTxn) if m.block_hash == b.hash]
        world.run(timeout * 1.1)  # src is slow (loaded): the full block is asked of `other`
        full = [m for m in sent(other, GetBlocksByHash) if b.hash in m.hashes]
        if full:
            give(other, Blocks(full[-1].req_id, [b.encode()]))
        # src's honest answer arrives, late
        give(src, BlockTxn(ask.req_id, [t.encode() for t in b.txs]))
    # docs (compact.py): "an answer, even late, takes one off"
    assert compact.unanswered.get(pid, 0) < compact_mod.UNANSWERED_MAX, compact.unanswered
    assert relay.gossip.score(pid) >= 0


def test_an_honest_peer_that_answers_every_getblocktxn_late_is_not_banned(tmp_path: Path) -> None:
    """Loaded peer: every answer 1.1 timeouts late, a faster announcer supplies the block."""
    timeout = 1.0
    world, keys, relay, src, _block = setup(tmp_path, n_txs=4, pooled=2, compact_timeout_s=timeout)
    pid = src.peer_id or b""
    other = world.attach(relay, host="10.4.4.4")
    for b in _missing_blocks(world, keys, 150):
        if not src.is_open:
            break
        give(src, compact_of(b))
        give(other, compact_of(b))
        asks = [m for m in sent(src, GetBlockTxn) if m.block_hash == b.hash]
        world.run(timeout * 1.1)
        for m in sent(other, GetBlocksByHash):
            if b.hash in m.hashes:
                give(other, Blocks(m.req_id, [b.encode()]))
        for m in sent(other, GetBlockTxn):
            if m.block_hash == b.hash:
                give(other, BlockTxn(m.req_id, [b.txs[i].encode() for i in m.indexes]))
        for m in asks:
            give(src, BlockTxn(m.req_id, [b.txs[i].encode() for i in m.indexes]))
    assert src.is_open and not relay.peering.book.peer_banned(pid), src.close_reason


def test_a_not_held_answer_counts_as_answered(tmp_path: Path) -> None:
    timeout = 1.0
    world, keys, relay, src, _block = setup(tmp_path, n_txs=4, pooled=2, compact_timeout_s=timeout)
    compact = relay.ingest.compact
    pid = src.peer_id or b""
    compact.unanswered[pid] = compact_mod.UNANSWERED_MAX
    (b,) = _missing_blocks(world, keys, 1)
    give(src, compact_of(b))
    (ask,) = [m for m in sent(src, GetBlockTxn) if m.block_hash == b.hash]
    give(src, BlockTxn(ask.req_id, []))  # "not held"
    assert compact.unanswered_count(pid) == compact_mod.UNANSWERED_MAX - 1


def test_timeouts_are_not_penalized_and_their_count_halves_per_half_life(tmp_path: Path) -> None:
    timeout = 1.0
    world, keys, relay, src, _block = setup(tmp_path, n_txs=4, pooled=2, compact_timeout_s=timeout)
    compact = relay.ingest.compact
    pid = src.peer_id or b""
    for b in _missing_blocks(world, keys, 4):  # announced, asked, never answered
        give(src, compact_of(b))
        world.run(timeout * 3.5)  # txn, full and last-call timeouts: given up
    assert compact.unanswered_count(pid) == 4
    assert relay.gossip.score(pid) >= 0 and src.is_open
    world.run(relay.ingest.cfg.score_half_life_s)
    assert compact.unanswered_count(pid) == 2
    world.run(relay.ingest.cfg.score_half_life_s * 2)
    assert compact.unanswered_count(pid) == 0 and pid not in compact.unanswered
