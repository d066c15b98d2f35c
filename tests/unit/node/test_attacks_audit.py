"""Attacks the bench does not ship, found by an attacker's audit (issue 12), as regressions on the
sans-IO core: each test is one attack and what a defended node does about it."""

from __future__ import annotations

from pathlib import Path

import pytest

from netdiag.node import validation
from netdiag.node.crypto import Identity
from netdiag.node.mempool import Mempool
from netdiag.node.messages import TOPIC_TXS, Publish
from netdiag.node.model import make_tx
from netdiag.node.state import Account
from tests.unit.node.corekit import World, lab


def test_one_transaction_per_sender_and_nonce_first_seen_wins() -> None:
    who = Identity.generate()
    first, twin = make_tx(who, 0, b"a", 0), make_tx(who, 0, b"b", 0)
    pool = Mempool(max_txs=10, max_bytes=10_000)
    assert pool.add(first.txid(), first, 100)
    assert not pool.add(twin.txid(), twin, 100)  # same sender and nonce: refused
    assert len(pool) == 1 and pool.holder(twin) == first.txid()
    pool.remove_committed([twin])  # a block committed the twin: the first can no longer apply
    assert len(pool) == 0 and pool.holder(first) is None
    assert pool.add(twin.txid(), twin, 100)  # the slot is free again
    small = Mempool(max_txs=1, max_bytes=10_000)  # eviction frees the slot too
    small.add(first.txid(), first, 100)
    other = make_tx(who, 1, b"c", 0)
    small.add(other.txid(), other, 100)
    assert small.holder(first) is None and small.add(twin.txid(), twin, 100)


def test_same_nonce_spam_does_not_fill_the_mempool_or_the_mesh(tmp_path: Path) -> None:
    """One key, one nonce, endless distinct payloads, every signature valid, gossiped by an
    authenticated peer: before, each was held and relayed (10,000 fill the mempool and evict
    honest transactions on every node of the mesh); now one is held and relayed, no more."""
    spec, _ = lab(3)
    world = World(tmp_path, spec)
    core = world.node("n", produce=False)
    spammer = world.attach(core, host="10.9.9.1")
    listener = world.attach(core, host="10.9.9.2")
    honest_sender = Identity.generate()
    honest = make_tx(honest_sender, 0, b"honest", world.clock.wall_ms())
    raw = honest.encode()
    listener.receive(Publish(TOPIC_TXS, raw), len(raw))
    world.sched.run_due()
    key = Identity.generate()
    for i in range(300):
        tx = make_tx(key, 0, i.to_bytes(4, "big"), world.clock.wall_ms())
        data = tx.encode()
        spammer.receive(Publish(TOPIC_TXS, data), len(data))
    world.run(2.0)
    assert len(core.mempool) == 2 and honest.txid() in core.mempool
    relayed = [m for m in listener.sent if isinstance(m, Publish) and m.topic == TOPIC_TXS]
    assert len(relayed) <= 1  # the first of the spammer's, at most (gossip may use IHave)
    assert spammer.is_open  # a relayer of a conflicting tx may be honest: no penalty


def test_api_refuses_a_second_transaction_for_a_taken_nonce(tmp_path: Path) -> None:
    spec, _ = lab(3)
    world = World(tmp_path, spec)
    core = world.node("n", produce=False)
    key = Identity.generate()
    a = make_tx(key, 0, b"a", world.clock.wall_ms())
    b = make_tx(key, 0, b"b", world.clock.wall_ms())
    assert core.ingest.submit_local_tx(a)[0] == "accept"
    assert core.ingest.submit_local_tx(b)[0] == "reject"
    assert any(e["reason"] == "nonce_taken" for e in world.events("n", "tx_rejected"))


def test_replayed_and_taken_nonce_txs_cost_no_signature_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Valid signatures, useless nonces (taken by a held tx, or below the sender's on chain),
    gossiped at the peer rate limit: ignored without a penalty (an honest relay can send one
    that a block just overtook), so they must at least be cheap — ignored before the signature
    is checked. Before, every one cost an Ed25519 verify on the loop."""
    spec, _ = lab(3)
    world = World(tmp_path, spec)
    core = world.node("n", produce=False)
    spammer = world.attach(core, host="10.9.9.1")
    key = Identity.generate()
    held = make_tx(key, 5, b"held", world.clock.wall_ms())
    raw = held.encode()
    spammer.receive(Publish(TOPIC_TXS, raw), len(raw))
    world.sched.run_due()
    assert held.txid() in core.mempool
    # the sender's nonce on chain moves to 3 (as a committed block would leave it)
    core.chain.ledger.accounts[key.node_id] = Account(0, 3)
    calls = [0]
    real = validation.crypto.verify

    def counted(*a: bytes) -> bool:
        calls[0] += 1
        return real(*a)

    monkeypatch.setattr(validation.crypto, "verify", counted)
    for i in range(200):
        nonce = 5 if i % 2 else 1  # taken by the held tx / below the sender's nonce 3
        data = make_tx(key, nonce, i.to_bytes(4, "big"), world.clock.wall_ms()).encode()
        spammer.receive(Publish(TOPIC_TXS, data), len(data))
    world.run(1.0)
    assert calls[0] == 0
    assert len(core.mempool) == 1 and spammer.is_open
    fresh = make_tx(key, 6, b"next", world.clock.wall_ms()).encode()  # a wanted one is checked
    spammer.receive(Publish(TOPIC_TXS, fresh), len(fresh))
    world.sched.run_due()
    assert calls[0] == 1 and len(core.mempool) == 2
