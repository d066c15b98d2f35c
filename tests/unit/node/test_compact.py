"""Compact block relay (issue 17, compact.py): a block as header + tx ids, rebuilt from the
mempool; missing txs asked for by index; ids that do not match the header refused and
penalized like an invalid block; a late or wrong answer ends in a full-block fetch from
another peer; pending reconstructions bounded per peer and in total; full blocks still go to
peers below version 3 and when the option is off."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from netdiag.node.core import NodeCore
from netdiag.node.crypto import Identity
from netdiag.node.gossip import message_id
from netdiag.node.messages import (
    TOPIC_BLOCKS,
    TOPIC_TXS,
    Blocks,
    BlockTxn,
    CompactBlock,
    GetBlocksByHash,
    GetBlockTxn,
    Message,
    Publish,
)
from netdiag.node.model import Block, Tx, make_block, make_tx
from tests.unit.node.corekit import MemLink, World, lab
from tests.unit.node.test_early_forward import scheduled_block


def compact_of(block: Block, txids: list[bytes] | None = None) -> CompactBlock:
    ids = txids if txids is not None else [t.txid() for t in block.txs]
    return CompactBlock(block.header.encode(), block.hash, block.signature, ids)


def give(link: MemLink, msg: Message) -> None:
    link.receive(msg, len(msgspec.msgpack.encode(msg)))


def sent(link: MemLink, kind: type[Any]) -> list[Any]:
    return [m for m in link.sent if isinstance(m, kind)]


def counter(core: NodeCore, event: str) -> float:
    return float(core.metrics.compact_blocks.labels(event)._value.get())


def hits(core: NodeCore, limit: str) -> float:
    return float(core.metrics.limit_hits.labels(limit)._value.get())


def setup(
    tmp: Path, n_txs: int = 5, pooled: int = 5, **cfg: Any
) -> tuple[World, list[Identity], NodeCore, MemLink, Block]:
    """A relay holding ``pooled`` of a scheduled block's ``n_txs`` txs in its mempool, and a
    scripted version-3 peer ``src`` to announce the block."""
    spec, keys = lab(3)
    world = World(tmp, spec)
    relay = world.node("relay", produce=False, **cfg)
    src = world.attach(relay, host="10.3.3.3")
    world.run(1.0)
    user = Identity.generate()
    txs = [make_tx(user, i, b"pay" * 100, world.clock.wall_ms()) for i in range(n_txs)]
    for tx in txs[:pooled]:
        assert relay.mempool.add(tx.txid(), tx, len(tx.encode()))
    block = scheduled_block(world, relay, keys, txs)
    return world, keys, relay, src, block


def test_a_block_is_rebuilt_from_the_mempool(tmp_path: Path) -> None:
    world, _keys, relay, src, block = setup(tmp_path)
    give(src, compact_of(block))
    world.run(0.5)
    assert relay.height == 1 and relay.chain.tip_hash == block.hash
    assert not sent(src, GetBlockTxn) and not sent(src, GetBlocksByHash)
    assert counter(relay, "rebuilt") == 1
    # the same gossip message as the full block: a full copy later is a duplicate
    assert message_id(block.encode()) in relay.gossip.seen
    give(src, Publish(TOPIC_BLOCKS, block.encode()))
    assert relay.gossip.seen[message_id(block.encode())].duplicates == 1
    give(src, compact_of(block))  # and so is a compact copy, counted on the same record
    assert counter(relay, "duplicate") == 1 and relay.height == 1
    assert relay.gossip.seen[message_id(block.encode())].duplicates == 2


def test_copies_arriving_while_txs_are_asked_for_count_as_duplicates(tmp_path: Path) -> None:
    world, _keys, relay, src, block = setup(tmp_path, n_txs=4, pooled=3)
    others = [world.attach(relay, host=f"10.4.4.{i}") for i in range(2)]
    give(src, compact_of(block))
    for o in others:
        give(o, compact_of(block))
    (ask,) = sent(src, GetBlockTxn)
    assert not any(sent(o, GetBlockTxn) for o in others)  # one reconstruction, one request
    give(src, BlockTxn(ask.req_id, [block.txs[3].encode()]))
    world.run(0.5)
    assert relay.height == 1
    assert relay.gossip.seen[message_id(block.encode())].duplicates == 2


def test_missing_txs_are_asked_for_by_index_and_checked(tmp_path: Path) -> None:
    world, _keys, relay, src, block = setup(tmp_path, n_txs=5, pooled=3)
    give(src, compact_of(block))
    world.run(0.1)
    (ask,) = sent(src, GetBlockTxn)
    assert ask.block_hash == block.hash and ask.indexes == [3, 4]
    assert relay.height == 0
    give(src, BlockTxn(ask.req_id, [block.txs[3].encode(), block.txs[4].encode()]))
    world.run(0.5)
    assert relay.height == 1 and relay.chain.tip_hash == block.hash
    assert counter(relay, "txn_ok") == 1
    assert relay.gossip.score(src.peer_id or b"") >= 0
    assert not relay.ingest.compact.pending


def test_a_recently_evicted_tx_is_still_found(tmp_path: Path) -> None:
    world, _keys, relay, src, block = setup(tmp_path, n_txs=3, pooled=3, mempool_max_txs=2)
    # the pool holds 2: the oldest was evicted, into the recent-tx cache
    assert len(relay.mempool) == 2
    give(src, compact_of(block))
    world.run(0.5)
    assert relay.height == 1 and not sent(src, GetBlockTxn)


def test_a_gossiped_tx_still_waiting_for_its_signature_batch_is_used(tmp_path: Path) -> None:
    world, _keys, relay, src, block = setup(tmp_path, n_txs=4, pooled=3)
    give(src, Publish(TOPIC_TXS, block.txs[3].encode()))  # batched: applied on a later turn
    assert block.txs[3].txid() in relay.ingest.txs.waiting
    give(src, compact_of(block))
    world.run(0.5)
    assert relay.height == 1 and not sent(src, GetBlockTxn)
    assert not relay.ingest.txs.waiting  # applied (then ignored: committed) and let go


def test_ids_that_do_not_match_the_header_are_refused_and_penalized(tmp_path: Path) -> None:
    world, _keys, relay, src, block = setup(tmp_path)
    ids = [t.txid() for t in block.txs]
    ids[0], ids[1] = ids[1], ids[0]  # same txs, another order: another root
    give(src, compact_of(block, ids))
    world.run(0.5)
    assert relay.height == 0 and not sent(src, GetBlockTxn)
    assert counter(relay, "refused") == 1
    assert relay.metrics.blocks_rejected.labels("merkle_root")._value.get() == 1
    assert relay.gossip.score(src.peer_id or b"") < 0
    assert relay.gossip.peers[src.peer_id or b""].invalid > 0  # scored as a rejected message
    # as much as a full block with a bad Merkle root costs its sender
    world2, _k, relay2, src2, block2 = setup(tmp_path / "full")
    bad = Block(block2.header, block2.hash, block2.signature, block2.txs[::-1])
    give(src2, Publish(TOPIC_BLOCKS, bad.encode()))
    world2.run(0.5)
    assert relay2.gossip.score(src2.peer_id or b"") == relay.gossip.score(src.peer_id or b"")


def test_a_header_whose_hash_is_not_the_claimed_one_is_refused(tmp_path: Path) -> None:
    world, _keys, relay, src, block = setup(tmp_path)
    msg = compact_of(block)
    give(src, CompactBlock(msg.header, bytes(32), msg.signature, msg.txids))
    world.run(0.5)
    assert relay.metrics.blocks_rejected.labels("hash")._value.get() == 1
    assert relay.gossip.score(src.peer_id or b"") < 0


def test_a_block_not_signed_by_a_validator_gets_no_request(tmp_path: Path) -> None:
    world, _keys, relay, src, block = setup(tmp_path, n_txs=4, pooled=2)
    msg = compact_of(block)
    give(src, CompactBlock(msg.header, msg.hash, bytes(64), msg.txids))
    world.run(0.5)
    assert not sent(src, GetBlockTxn) and not relay.ingest.compact.pending
    assert relay.metrics.blocks_rejected.labels("signature")._value.get() == 1
    assert relay.gossip.score(src.peer_id or b"") < 0


def test_a_wrong_tx_in_the_answer_is_penalized_and_the_full_block_fetched(
    tmp_path: Path,
) -> None:
    world, _keys, relay, src, block = setup(tmp_path, n_txs=4, pooled=2)
    other = world.attach(relay, host="10.4.4.4")
    give(src, compact_of(block))
    give(other, compact_of(block))  # another source for the fallback
    world.run(0.1)
    (ask,) = sent(src, GetBlockTxn)
    assert not sent(other, GetBlockTxn)
    wrong = make_tx(Identity.generate(), 0, b"x", world.clock.wall_ms())
    give(src, BlockTxn(ask.req_id, [block.txs[2].encode(), wrong.encode()]))
    world.run(0.1)
    assert relay.gossip.score(src.peer_id or b"") < 0
    assert counter(relay, "fallback_bad_answer") == 1
    (fetch,) = sent(other, GetBlocksByHash)
    assert fetch.hashes == [block.hash] and not sent(src, GetBlocksByHash)
    give(other, Blocks(fetch.req_id, [block.encode()]))
    world.run(0.5)
    assert relay.height == 1 and counter(relay, "fetched") == 1
    assert relay.gossip.score(other.peer_id or b"") >= 0


def test_no_answer_in_time_falls_back_to_another_source(tmp_path: Path) -> None:
    timeout = 1.0
    world, _keys, relay, src, block = setup(tmp_path, n_txs=4, pooled=2, compact_timeout_s=timeout)
    other = world.attach(relay, host="10.4.4.4")
    give(src, compact_of(block))
    give(other, compact_of(block))
    world.run(timeout / 2)
    assert sent(src, GetBlockTxn) and not sent(other, GetBlocksByHash)
    world.run(timeout)  # past the timeout: src is not waited on any longer
    assert counter(relay, "fallback_timeout") == 1
    (fetch,) = sent(other, GetBlocksByHash)
    # other does not answer either: src is asked for the full block last
    world.run(timeout)
    assert counter(relay, "fallback_timeout") == 2
    (fetch2,) = sent(src, GetBlocksByHash)
    assert fetch2.req_id != fetch.req_id
    give(src, Blocks(fetch2.req_id, [block.encode()]))
    world.run(0.5)
    assert relay.height == 1
    # answers after the block is done: ignored, not penalized
    (ask,) = sent(src, GetBlockTxn)
    give(src, BlockTxn(ask.req_id, [t.encode() for t in block.txs[2:]]))
    give(other, Blocks(fetch.req_id, [block.encode()]))
    assert counter(relay, "late_answer") == 2 and relay.height == 1
    assert relay.gossip.score(src.peer_id or b"") >= 0
    assert relay.gossip.score(other.peer_id or b"") >= 0
    world.run(timeout * 3)
    compact = relay.ingest.compact
    assert not compact.pending and not compact.reqs and not compact.waits


def test_an_answer_after_its_timeout_still_completes_the_block(tmp_path: Path) -> None:
    timeout = 1.0
    world, _keys, relay, src, block = setup(tmp_path, n_txs=4, pooled=2, compact_timeout_s=timeout)
    other = world.attach(relay, host="10.4.4.4")
    give(src, compact_of(block))
    give(other, compact_of(block))
    world.run(timeout * 1.5)  # src is late: the full block is asked of `other`
    assert sent(other, GetBlocksByHash) and relay.height == 0
    (ask,) = sent(src, GetBlockTxn)
    give(src, BlockTxn(ask.req_id, [t.encode() for t in block.txs[2:]]))  # slow, not wrong
    world.run(0.5)
    assert relay.height == 1 and counter(relay, "txn_ok") == 1
    assert counter(relay, "late_answer") == 1
    assert relay.gossip.score(src.peer_id or b"") >= 0
    (fetch,) = sent(other, GetBlocksByHash)  # its answer now comes after the block is done
    give(other, Blocks(fetch.req_id, [block.encode()]))
    assert relay.height == 1 and not relay.ingest.compact.reqs


def test_when_every_source_fails_one_more_timeout_is_waited_then_it_is_dropped(
    tmp_path: Path,
) -> None:
    world, _keys, relay, src, block = setup(tmp_path, n_txs=3, pooled=1, compact_timeout_s=0.5)
    give(src, compact_of(block))
    world.run(0.7)  # txn timed out: the full block from src (the only source)
    assert sent(src, GetBlocksByHash)
    world.run(0.5)  # that timed out too: nobody left, one last timeout
    assert counter(relay, "failed") == 0 and relay.ingest.compact.pending
    late = world.attach(relay, host="10.6.6.6")
    give(late, compact_of(block))  # a new announcer meanwhile is asked at once
    (fetch,) = sent(late, GetBlocksByHash)
    world.run(1.2)  # it does not answer either: the last timeout, then given up
    assert counter(relay, "failed") == 1
    compact = relay.ingest.compact
    assert not compact.pending and not compact.reqs and not compact.waits
    give(late, Blocks(fetch.req_id, [block.encode()]))  # too late: ignored, not penalized
    assert relay.height == 0 and relay.gossip.score(late.peer_id or b"") >= 0


def test_an_answer_nobody_asked_for_is_penalized(tmp_path: Path) -> None:
    _world, _keys, relay, src, _block = setup(tmp_path)
    give(src, BlockTxn(12345, [b"junk"]))
    assert relay.gossip.score(src.peer_id or b"") < 0


def _missing_blocks(world: World, keys: list[Identity], n: int) -> list[Block]:
    """Blocks at distinct heights whose txs nobody holds, signed by a validator (consistent
    hash, signature, ids and root; not valid on the chain, which no reconstruction knows)."""
    user = Identity.generate()
    now = world.clock.wall_ms()
    z = bytes(32)
    return [
        make_block(
            keys[0], world.spec.network_id, h, z, now, [make_tx(user, h, b"z", now)], state_root=z
        )
        for h in range(1, n + 1)
    ]


def test_pending_reconstructions_are_bounded_per_peer_and_in_total(tmp_path: Path) -> None:
    world, keys, relay, src, _block = setup(
        tmp_path, compact_pending_per_peer=2, compact_pending_max=3
    )
    blocks = _missing_blocks(world, keys, 6)
    for b in blocks[:3]:
        give(src, compact_of(b))
    assert len(sent(src, GetBlockTxn)) == 2
    assert hits(relay, "compact_pending_peer") == 1
    other = world.attach(relay, host="10.4.4.4")
    for b in blocks[3:]:
        give(other, compact_of(b))
    assert len(sent(other, GetBlockTxn)) == 1  # the total bound (3) reached
    assert hits(relay, "compact_pending") == 2
    assert len(relay.ingest.compact.pending) == 3


def test_the_recent_tx_cache_is_bounded(tmp_path: Path) -> None:
    world, _keys, relay, _src, _block = setup(tmp_path, compact_recent_txs=4)
    user = Identity.generate()
    relay.ingest.compact.remember(make_tx(user, i, b"r", world.clock.wall_ms()) for i in range(10))
    assert len(relay.ingest.compact.recent) == 4


def relay_pair(
    tmp: Path, **cfg: Any
) -> tuple[World, list[Identity], NodeCore, NodeCore, MemLink, MemLink, list[Tx]]:
    """relay -> next, both holding the same txs; a scripted peer gossips into the relay."""
    spec, keys = lab(3)
    world = World(tmp, spec)
    relay = world.node("relay", produce=False, **cfg)
    nxt = world.node("next", produce=False)
    to_next, _ = world.connect(relay, nxt)
    src = world.attach(relay, host="10.3.3.3")
    world.run(2.0)  # heartbeats: the relay grafts `next` into its blocks mesh
    user = Identity.generate()
    txs = [make_tx(user, i, b"pay" * 300, world.clock.wall_ms()) for i in range(6)]
    for core in (relay, nxt):
        for tx in txs:
            core.mempool.add(tx.txid(), tx, len(tx.encode()))
    return world, keys, relay, nxt, src, to_next, txs


def test_a_relay_forwards_compact_and_the_next_node_rebuilds(tmp_path: Path) -> None:
    world, keys, relay, nxt, src, to_next, txs = relay_pair(tmp_path, compact_blocks=True)
    nxt.mempool.remove([txs[5].txid()])  # one the next node has to ask for
    block = scheduled_block(world, relay, keys, txs)
    raw = block.encode()
    give(src, Publish(TOPIC_BLOCKS, raw))
    world.run(0.5)
    assert relay.height == 1 and nxt.height == 1 and nxt.chain.tip_hash == block.hash
    (cb,) = sent(to_next, CompactBlock)
    assert cb.hash == block.hash and not [m for m in sent(to_next, Publish) if m.data == raw]
    assert counter(relay, "txn_served") == 1 and counter(nxt, "txn_ok") == 1
    assert len(msgspec.msgpack.encode(cb)) < len(raw) // 3
    assert message_id(raw) in nxt.gossip.seen


def test_full_blocks_for_older_peers_and_with_the_option_off(tmp_path: Path) -> None:
    world, keys, relay, nxt, src, to_next, txs = relay_pair(tmp_path, compact_blocks=True)
    to_next.version = 2  # the Hello negotiation's result with a version-2 node
    block = scheduled_block(world, relay, keys, txs)
    give(src, Publish(TOPIC_BLOCKS, block.encode()))
    world.run(0.5)
    assert not sent(to_next, CompactBlock) and nxt.height == 1
    assert [m for m in sent(to_next, Publish) if m.data == block.encode()]
    world2, keys2, relay2, nxt2, src2, to_next2, txs2 = relay_pair(
        tmp_path / "off", compact_blocks=False
    )
    block2 = scheduled_block(world2, relay2, keys2, txs2)
    give(src2, Publish(TOPIC_BLOCKS, block2.encode()))
    world2.run(0.5)
    assert not sent(to_next2, CompactBlock) and nxt2.height == 1
    assert counter(relay2, "sent") == 0


def test_a_block_relayed_compact_is_served_before_its_commit(tmp_path: Path) -> None:
    world, keys, relay, _nxt, _src, _to_next, txs = relay_pair(tmp_path, compact_blocks=True)
    block = scheduled_block(world, relay, keys, txs)
    asker = world.attach(relay, host="10.5.5.5")
    # sent compact (to the mesh) before any full check: kept to answer the peers it went to
    sends = relay.ingest.compact.outgoing(
        [(asker.peer_id or b"", Publish(TOPIC_BLOCKS, block.encode()))]
    )
    assert isinstance(sends[0][1], CompactBlock) and relay.height == 0
    give(asker, GetBlockTxn(7, block.hash, [0, 2]))
    (ans,) = sent(asker, BlockTxn)
    assert ans.txs == [block.txs[0].encode(), block.txs[2].encode()]
    give(asker, GetBlocksByHash(8, [block.hash]))
    (full,) = sent(asker, Blocks)
    assert full.blocks == [block.encode()]
    give(asker, GetBlockTxn(9, block.hash, [99]))  # out of range: empty and penalized
    assert sent(asker, BlockTxn)[-1].txs == []
    assert relay.gossip.score(asker.peer_id or b"") < 0
