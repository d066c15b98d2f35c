"""Propagation at the bound (issue 17 item 3): a relay forwards a gossiped block once its cheap
checks pass (producer signature, slot and schedule, parent = our tip, Merkle root), before its
transactions' signatures are checked; the full check still decides the commit, and a block
that fails it costs its producer — not the peers that relayed it under the same rule."""

from __future__ import annotations

import contextlib
from pathlib import Path

from netdiag.node.core import NodeCore
from netdiag.node.crypto import Identity
from netdiag.node.errors import ValidationError
from netdiag.node.gossip import message_id
from netdiag.node.messages import TOPIC_BLOCKS, Publish
from netdiag.node.model import Block, Tx, make_block, make_tx
from netdiag.node.schedule import producer_for, round_for
from netdiag.node.state import Overlay, execute
from tests.unit.node.corekit import MemLink, World, lab


def forged(tx: Tx) -> Tx:
    return Tx(tx.sender, tx.nonce, tx.timestamp_ms, tx.payload, bytes(64))


def scheduled_block(world: World, core: NodeCore, keys: list[Identity], txs: list[Tx]) -> Block:
    """Height tip+1 by the producer scheduled for the current round (manual clock)."""
    spec = world.spec
    tip = core.chain.tip
    now = world.clock.wall_ms()
    r = max(0, round_for(tip.header.timestamp_ms, now, spec.params.slot_ms))
    owner = producer_for(spec.validators, core.chain.seed_hash(tip.height + 1), tip.height + 1, r)
    key = next(k for k in keys if k.node_id == owner)
    state = Overlay(core.chain.ledger)  # the state root the block's txs leave (state.py)
    for tx in txs:
        with contextlib.suppress(ValidationError):  # a forged tx: the full check rejects it
            execute(tx, state)
    h = tip.height + 1
    return make_block(key, spec.network_id, h, tip.hash, now, txs, state_root=state.root())


def relay_world(
    tmp: Path, early: bool = True
) -> tuple[World, list[Identity], NodeCore, NodeCore, MemLink, MemLink]:
    """relay -- next, and a scripted peer ``src`` that gossips into the relay; the relay's
    link to the producer (a scripted peer with the producer's id) is made per test. The relay
    sends full blocks (``compact_blocks`` off)."""
    spec, keys = lab(3)
    world = World(tmp, spec)
    # the full-block path (blocks forwarded as `pub`); compact relay: test_compact.py
    relay = world.node("relay", produce=False, early_forward=early, compact_blocks=False)
    nxt = world.node("next", produce=False)
    to_next, _ = world.connect(relay, nxt)
    src = world.attach(relay, host="10.3.3.3")
    world.run(2.0)  # heartbeats: the relay grafts `next` into its blocks mesh
    return world, keys, relay, nxt, src, to_next


def publishes(link: MemLink, data: bytes) -> int:
    return sum(isinstance(m, Publish) and m.data == data for m in link.sent)


def test_a_block_is_forwarded_before_its_transactions_are_checked(tmp_path: Path) -> None:
    world, keys, relay, nxt, src, to_next = relay_world(tmp_path)
    user = Identity.generate()
    txs = [make_tx(user, i, b"pay", world.clock.wall_ms()) for i in range(5)]
    block = scheduled_block(world, relay, keys, txs)
    raw = block.encode()
    seen: list[int] = []
    submit = relay.chain.submit

    def spy(b: Block, encoded_len: int | None = None) -> object:
        seen.append(publishes(to_next, raw))  # forwarded already when the full check starts?
        return submit(b, encoded_len)

    relay.chain.submit = spy  # type: ignore[method-assign,assignment]
    src.receive(Publish(TOPIC_BLOCKS, raw), len(raw))
    world.run(0.5)
    assert seen == [1], "forwarded to the mesh before the full check ran"
    assert publishes(to_next, raw) == 1, "forwarded once"
    assert relay.height == 1 and nxt.height == 1
    assert relay.metrics.blocks_forwarded_early._value.get() == 1
    assert relay.gossip.seen[message_id(raw)].verdict == "accept"


def test_a_block_failing_its_full_check_costs_its_producer_not_the_relays(tmp_path: Path) -> None:
    world, keys, relay, nxt, src, to_next = relay_world(tmp_path)
    user = Identity.generate()
    good = [make_tx(user, i, b"pay", world.clock.wall_ms()) for i in range(3)]
    block = scheduled_block(world, relay, keys, [*good, forged(good[0])])
    producer = world.attach(relay, peer_id=block.header.producer, host="10.4.4.4")
    raw = block.encode()
    src.receive(Publish(TOPIC_BLOCKS, raw), len(raw))
    world.run(0.5)
    # it passed the cheap checks (signed, scheduled, root matches), so it went on ...
    assert publishes(to_next, raw) == 1
    # ... and was rejected by every full check: nobody commits it
    assert relay.height == 0 and nxt.height == 0
    assert {e["reason"] for e in world.events("relay", "block_rejected")} == {"tx_signature"}
    assert relay.gossip.seen[message_id(raw)].verdict == "reject"
    # the producer pays, the relays do not: neither the sender into `relay` nor `relay` at `next`
    assert relay.gossip.score(block.header.producer) < 0
    assert relay.gossip.score(src.peer_id or b"") >= 0
    assert nxt.gossip.score(relay.node_id) >= 0
    assert world.events("relay", "early_forward_failed")
    assert producer.is_open
    # its next block waits for the full check before it is forwarded
    world.run(float(world.spec.params.slot_ms) / 1000)
    again = scheduled_block(world, relay, keys, [forged(good[1])])
    if again.header.producer == block.header.producer:
        raw2 = again.encode()
        src.receive(Publish(TOPIC_BLOCKS, raw2), len(raw2))
        world.run(0.5)
        assert publishes(to_next, raw2) == 0, "no early forward for a producer that failed"


def test_with_early_forward_off_the_full_check_comes_first(tmp_path: Path) -> None:
    world, keys, relay, nxt, src, to_next = relay_world(tmp_path, early=False)
    block = scheduled_block(world, relay, keys, [])
    raw = block.encode()
    seen: list[int] = []
    submit = relay.chain.submit

    def spy(b: Block, encoded_len: int | None = None) -> object:
        seen.append(publishes(to_next, raw))
        return submit(b, encoded_len)

    relay.chain.submit = spy  # type: ignore[method-assign,assignment]
    src.receive(Publish(TOPIC_BLOCKS, raw), len(raw))
    world.run(0.5)
    assert seen == [0] and publishes(to_next, raw) == 1 and nxt.height == 1
    assert relay.metrics.blocks_forwarded_early._value.get() == 0
