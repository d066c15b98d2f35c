"""Compact block relay hardening (review of compact.py): getblocktxn requests validated and
their answers bounded; a rejected block not served from the relay cache; replays dropped before
the Merkle root; the recent-tx cache bounded in bytes; fallback counters not inflated."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from netdiag.node import compact as compact_mod
from netdiag.node.config import load_config
from netdiag.node.crypto import Identity
from netdiag.node.errors import ConfigError
from netdiag.node.messages import (
    TOPIC_BLOCKS,
    Blocks,
    BlockTxn,
    GetBlocksByHash,
    GetBlockTxn,
    Publish,
)
from netdiag.node.model import Block, Tx, make_tx
from tests.unit.node.corekit import MemLink, World
from tests.unit.node.test_compact import (
    _missing_blocks,
    compact_of,
    counter,
    give,
    hits,
    relay_pair,
    sent,
    setup,
)
from tests.unit.node.test_early_forward import scheduled_block


def _relayed_block(tmp: Path, **cfg: object) -> tuple[World, Block, MemLink]:
    """A block the relay sent compact to ``asker`` (so it answers getblocktxn for it)."""
    world, keys, relay, _nxt, _src, _to_next, txs = relay_pair(tmp, compact_blocks=True, **cfg)
    block = scheduled_block(world, relay, keys, txs)
    asker = world.attach(relay, host="10.5.5.5")
    relay.ingest.compact.outgoing([(asker.peer_id or b"", Publish(TOPIC_BLOCKS, block.encode()))])
    return world, block, asker


def _score(asker: MemLink) -> float:
    return asker.core.gossip.score(asker.peer_id or b"")


def test_getblocktxn_with_repeated_indexes_gets_no_amplified_answer(tmp_path: Path) -> None:
    """Duplicate indexes: a ~10 KB request must not make a reply of 10,000 copies of a tx."""
    _world, block, asker = _relayed_block(tmp_path)
    req = GetBlockTxn(7, block.hash, [0] * 10_000)
    req_bytes = len(msgspec.msgpack.encode(req))
    give(asker, req)
    out = sum(len(t) for m in sent(asker, BlockTxn) for t in m.txs)
    # at most the block itself (each index once), never req x tx-size
    assert out <= len(block.encode()), (req_bytes, out)
    assert _score(asker) < 0  # a malformed request, penalized


def test_getblocktxn_indexes_must_be_strictly_ascending_and_in_range(tmp_path: Path) -> None:
    """Anything else is a protocol violation: penalized and recorded (a second one bans, as
    ``max_violations`` says), answered empty."""
    world, block, asker = _relayed_block(tmp_path)
    core = asker.core
    n = len(block.txs)
    bad = [[], [1, 0], [0, 0], [-1, 0], [n], list(range(n + 1))]
    for i, idx in enumerate(bad):
        peer = world.attach(core, host=f"10.7.7.{i}")
        give(peer, GetBlockTxn(10 + i, block.hash, idx))
        assert sent(peer, BlockTxn)[-1].txs == [], idx
        assert _score(peer) < 0, idx
    assert core.metrics.protocol_violations.labels("getblocktxn")._value.get() == len(bad)
    give(asker, GetBlockTxn(20, block.hash, [0, 0]))
    assert asker.is_open  # one violation on record
    give(asker, GetBlockTxn(21, block.hash, [0, 0]))
    assert not asker.is_open and core.peering.book.peer_banned(asker.peer_id or b"")


def test_a_well_formed_getblocktxn_is_answered_in_order(tmp_path: Path) -> None:
    _world, block, asker = _relayed_block(tmp_path)
    give(asker, GetBlockTxn(7, block.hash, [1, 3, 4]))
    (ans,) = sent(asker, BlockTxn)
    assert ans.txs == [block.txs[i].encode() for i in (1, 3, 4)]
    assert _score(asker) >= 0


def test_a_getblocktxn_answer_over_the_byte_budget_is_refused_empty(tmp_path: Path) -> None:
    """Over max_frame_bytes // 2: an empty answer ("not held": the asker fetches the block
    whole), no penalty — a partial answer would be a wrong one to an honest asker."""
    _world, block, asker = _relayed_block(tmp_path, max_frame_bytes=4096)
    assert sum(len(t.encode()) for t in block.txs) > 4096 // 2
    give(asker, GetBlockTxn(7, block.hash, list(range(len(block.txs)))))
    (ans,) = sent(asker, BlockTxn)
    assert ans.txs == []
    assert asker.core.metrics.limit_hits.labels("getblocktxn_bytes")._value.get() == 1
    assert _score(asker) >= 0
    give(asker, GetBlockTxn(8, block.hash, [0]))  # one small tx still fits
    assert sent(asker, BlockTxn)[-1].txs == [block.txs[0].encode()]


def test_a_graylisted_peer_is_served_like_getblocksbyhash_a_closed_one_is_not(
    tmp_path: Path,
) -> None:
    _world, block, asker = _relayed_block(tmp_path)
    core = asker.core
    core.gossip.penalize(asker.peer_id or b"", 90.0)
    assert _score(asker) < core.gossip.p.graylist_threshold
    give(asker, GetBlockTxn(7, block.hash, [0]))
    assert sent(asker, BlockTxn)[-1].txs == [block.txs[0].encode()]
    asker.close_reason = "banned: test"
    before = len(asker.sent)
    core.ingest.compact.serve_txn(asker, GetBlockTxn(8, block.hash, [0]))
    assert len(asker.sent) == before


def test_a_block_that_failed_its_full_check_is_not_served_from_the_relay_cache(
    tmp_path: Path,
) -> None:
    """Early-forwarded compact, then rejected (a tx's signature is bad): the relay must not keep
    serving it by hash (GetBlocksByHash / GetBlockTxn) as if it were a block it holds."""
    world, keys, relay, _nxt, src, _to_next, txs = relay_pair(tmp_path, compact_blocks=True)
    bad_tx = msgspec.structs.replace(txs[0], signature=bytes(64))
    assert isinstance(bad_tx, Tx)
    block = scheduled_block(world, relay, keys, [bad_tx, *txs[1:]])
    give(src, Publish(TOPIC_BLOCKS, block.encode()))
    world.run(1.0)
    assert relay.height == 0  # rejected by the full check
    assert counter(relay, "sent") >= 1  # it had gone out compact (early forward)
    asker = world.attach(relay, host="10.5.5.5")
    give(asker, GetBlocksByHash(8, [block.hash]))
    (full,) = sent(asker, Blocks)
    assert full.blocks == [], "an invalid block is served from compact.relayed"
    give(asker, GetBlockTxn(9, block.hash, [0]))
    assert sent(asker, BlockTxn)[-1].txs == []


def test_a_replayed_compact_block_is_dropped_before_its_merkle_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compact copy of a block already committed is a duplicate: dropped on its (cheap)
    header hash before the Merkle root over all its ids is computed."""
    world, _keys, relay, src, block = setup(tmp_path)
    give(src, compact_of(block))
    world.run(0.5)
    assert relay.height == 1
    calls: list[int] = []
    real = compact_mod.merkle_root

    def counting(ids: list[bytes]) -> bytes:
        calls.append(len(ids))
        return real(ids)

    monkeypatch.setattr(compact_mod, "merkle_root", counting)
    for _ in range(5):
        give(src, compact_of(block))
    assert calls == [], f"merkle_root computed {len(calls)} times for a committed block's replays"
    assert counter(relay, "duplicate") == 5


def test_the_recent_tx_cache_is_bounded_in_bytes_oldest_first(tmp_path: Path) -> None:
    world, _keys, relay, _src, _block = setup(tmp_path, compact_recent_bytes=10_000)
    compact = relay.ingest.compact
    user = Identity.generate()
    big = [make_tx(user, i, b"x" * 2000, world.clock.wall_ms()) for i in range(20)]
    compact.remember(big)
    assert 0 < compact.recent.bytes <= 10_000
    assert compact.recent.bytes == sum(size for _tx, size in compact.recent.txs.values())
    assert len(compact.recent) < len(big)  # the count cap (4096) is not what bound it
    assert big[-1].txid() in compact.recent and big[0].txid() not in compact.recent
    assert hits(relay, "compact_recent_bytes") == len(big) - len(compact.recent)
    compact.remember([make_tx(user, 99, b"y" * 20_000, world.clock.wall_ms())])  # > the cap
    assert big[-1].txid() in compact.recent and compact.recent.bytes <= 10_000


def test_compact_recent_bytes_is_range_checked() -> None:
    base = {"data_dir": "d", "genesis": "g"}
    assert load_config(None, {}, base).compact_recent_bytes > 0  # on by default
    with pytest.raises(ConfigError, match="compact_recent_bytes"):
        load_config(None, {"NETDIAG_NODE_COMPACT_RECENT_BYTES": "-1"}, base)


def test_a_block_that_came_in_full_is_not_counted_as_a_fallback(tmp_path: Path) -> None:
    """The pending reconstruction's block arrives as a full gossiped block meanwhile: the
    later timeouts must not count fallback_timeout / failed (bench p2p reports them), nor
    fetch it again."""
    world, _keys, relay, src, block = setup(tmp_path, n_txs=3, pooled=1, compact_timeout_s=0.5)
    give(src, compact_of(block))
    world.run(0.1)
    assert sent(src, GetBlockTxn)
    other = world.attach(relay, host="10.6.6.6")
    give(other, Publish(TOPIC_BLOCKS, block.encode()))  # the full block, by gossip
    world.run(3.0)
    assert relay.height == 1
    assert counter(relay, "fallback_timeout") == 0
    assert counter(relay, "failed") == 0
    assert not sent(src, GetBlocksByHash) and not sent(other, GetBlocksByHash)
    assert not relay.ingest.compact.pending


def test_a_block_that_came_in_full_during_the_last_wait_is_not_counted_failed(
    tmp_path: Path,
) -> None:
    """Every source failed (the last-call wait), then the block came in full: not "failed"."""
    world, _keys, relay, src, block = setup(tmp_path, n_txs=3, pooled=1, compact_timeout_s=0.5)
    give(src, compact_of(block))
    world.run(0.1)
    (ask,) = sent(src, GetBlockTxn)
    give(src, BlockTxn(ask.req_id, []))  # not held: the full block from src (the only source)
    (full,) = sent(src, GetBlocksByHash)
    give(src, Blocks(full.req_id, []))  # not held either: the last-call wait
    assert relay.ingest.compact.pending[block.hash].stage == "wait"
    other = world.attach(relay, host="10.6.6.6")
    give(other, Publish(TOPIC_BLOCKS, block.encode()))
    world.run(3.0)
    assert relay.height == 1
    assert counter(relay, "failed") == 0 and counter(relay, "fallback_not_held") == 2
    assert not relay.ingest.compact.pending


def test_a_first_announcer_that_never_answers_is_no_longer_waited_on(tmp_path: Path) -> None:
    """A peer that announces first and leaves getblocktxn unanswered: each timeout is counted
    (not penalized); once UNANSWERED_MAX are on record it is still asked first, but the next
    peer to announce the block is asked at once, so the block no longer waits a timeout."""
    timeout = 1.0
    world, keys, relay, src, block = setup(tmp_path, n_txs=4, pooled=2, compact_timeout_s=timeout)
    compact = relay.ingest.compact
    bogus = _missing_blocks(world, keys, compact_mod.UNANSWERED_MAX)
    for b in bogus:  # announced, asked, never answered
        give(src, compact_of(b))
        world.run(timeout * 3.5)  # txn, full and last-call timeouts: given up
    assert counter(relay, "txn_unanswered") == compact_mod.UNANSWERED_MAX
    assert compact.unanswered[src.peer_id or b""] == compact_mod.UNANSWERED_MAX
    assert relay.gossip.score(src.peer_id or b"") >= 0  # slow is not wrong
    timeouts = counter(relay, "fallback_timeout")
    other = world.attach(relay, host="10.4.4.4")
    give(src, compact_of(block))
    assert sent(src, GetBlockTxn)[-1].block_hash == block.hash  # still asked first
    give(other, compact_of(block))
    (ask,) = sent(other, GetBlockTxn)  # asked at once, not after src's timeout
    assert ask.indexes == [2, 3] and counter(relay, "parallel_ask") == 1
    give(other, BlockTxn(ask.req_id, [t.encode() for t in block.txs[2:]]))
    world.run(timeout / 4)  # well within the timeout src is not waited out for
    assert relay.height == 1 and counter(relay, "fallback_timeout") == timeouts
    assert relay.gossip.score(other.peer_id or b"") >= 0


def test_a_peer_that_answers_is_asked_alone_and_earns_its_record_back(tmp_path: Path) -> None:
    timeout = 1.0
    world, _keys, relay, src, block = setup(tmp_path, n_txs=4, pooled=2, compact_timeout_s=timeout)
    compact = relay.ingest.compact
    pid = src.peer_id or b""
    compact.unanswered[pid] = compact_mod.UNANSWERED_MAX - 1  # one short of distrust
    other = world.attach(relay, host="10.4.4.4")
    give(src, compact_of(block))
    give(other, compact_of(block))
    assert not sent(other, GetBlockTxn) and counter(relay, "parallel_ask") == 0
    (ask,) = sent(src, GetBlockTxn)
    give(src, BlockTxn(ask.req_id, [t.encode() for t in block.txs[2:]]))
    world.run(0.5)
    assert relay.height == 1
    assert compact.unanswered.get(pid, 0) == compact_mod.UNANSWERED_MAX - 2


def test_getblocksbyhash_serves_each_block_once_within_the_byte_budget(tmp_path: Path) -> None:
    """The same hash 128 times must not make an answer of 128 copies of the block."""
    _world, block, asker = _relayed_block(tmp_path)
    give(asker, GetBlocksByHash(8, [block.hash] * 128))
    (ans,) = sent(asker, Blocks)
    assert ans.blocks == [block.encode()]
