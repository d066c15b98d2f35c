"""Account state: transfers, nonces, the state root in every header, reorgs and restarts."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import msgspec
import pytest

from netdiag.node.chain import Chain
from netdiag.node.crypto import Identity, lab_identity
from netdiag.node.errors import StoreError
from netdiag.node.genesis import ChainParams, lab_genesis, parse_genesis
from netdiag.node.model import make_tx, merkle_of_hashes
from netdiag.node.state import Account, Ledger, Overlay, execute, leaf_hash
from netdiag.node.store import Store
from tests.unit.node.chainkit import SLOT, T0, Clock, branch, extend, next_block

ALICE = lab_identity("state-test", 100)
BOB = lab_identity("state-test", 101)


def funded(tmp: Path, balance: int = 1000) -> tuple[Chain, list[Identity], Clock]:
    spec, keys = lab_genesis(
        3,
        "test",
        "nd-test",
        T0,
        ChainParams(epoch_length=4, slot_ms=SLOT),
        allocations=[(ALICE.node_id, balance)],
    )
    clock = Clock()
    return Chain(Store(tmp / "chain.sqlite"), spec, clock_ms=clock), keys, clock


def pay(who: Identity, nonce: int, to: Identity, amount: int) -> object:
    return make_tx(who, nonce, b"", T0, to.node_id, amount)


def commit(chain: Chain, keys: list[Identity], clock: Clock, txs: list) -> str | None:  # type: ignore[type-arg]
    b = next_block(chain, keys, txs)
    clock.ms = b.header.timestamp_ms
    res = chain.submit(b)
    return None if res.error is None else res.error.reason


def test_transfers_move_balances_and_nonces_only_grow(tmp_path: Path) -> None:
    chain, keys, clock = funded(tmp_path)
    assert commit(chain, keys, clock, [pay(ALICE, 0, BOB, 300), pay(ALICE, 5, BOB, 200)]) is None
    assert chain.ledger.get(ALICE.node_id) == Account(500, 6)
    assert chain.ledger.get(BOB.node_id) == Account(500, 0)
    assert chain.tip.header.state_root == chain.ledger.root()
    # a replay of an included tx, and a lower nonce, are refused by the state rule
    assert commit(chain, keys, clock, [pay(ALICE, 5, BOB, 1)]) in ("nonce", "duplicate_tx")
    assert commit(chain, keys, clock, [pay(ALICE, 4, BOB, 1)]) == "nonce"
    assert commit(chain, keys, clock, [pay(BOB, 0, ALICE, 501)]) == "balance"
    assert commit(chain, keys, clock, [pay(BOB, 0, ALICE, 500)]) is None
    assert chain.ledger.get(BOB.node_id) == Account(0, 1)


def test_a_header_whose_state_root_does_not_match_is_rejected(tmp_path: Path) -> None:
    chain, keys, clock = funded(tmp_path)
    good = next_block(chain, keys, [pay(ALICE, 0, BOB, 10)])
    hdr = msgspec.structs.replace(good.header, state_root=hashlib.sha256(b"x").digest())
    key = next(k for k in keys if k.node_id == hdr.producer)
    from netdiag.node.model import make_block

    forged = make_block(
        key,
        hdr.network_id,
        hdr.height,
        hdr.prev_hash,
        hdr.timestamp_ms,
        good.txs,
        b"",
        b"",
        hdr.state_root,
    )
    clock.ms = hdr.timestamp_ms
    res = chain.submit(forged)
    assert res.error is not None and res.error.reason == "state_root"
    assert chain.height == 0 and chain.ledger.get(BOB.node_id) is None


def test_the_root_is_the_documented_tree_over_sorted_keys_in_any_insertion_order() -> None:
    rng = random.Random(7)
    accounts = [
        (rng.randbytes(32), Account(rng.randrange(10**9), rng.randrange(99))) for _ in range(600)
    ]
    a = Ledger(accounts)
    shuffled = list(accounts)
    rng.shuffle(shuffled)
    assert Ledger(shuffled).root() == a.root()
    buckets = []
    for b in range(256):
        leaves = sorted((k, v) for k, v in accounts if k[0] == b)
        buckets.append(merkle_of_hashes([leaf_hash(k, v) for k, v in leaves]))
    assert a.root() == merkle_of_hashes(buckets)
    # an overlay's root equals the root of the same state built from scratch
    ov = Overlay(a)
    ov.set(accounts[0][0], Account(1, 1))
    ov.set(b"\x00" * 32, Account(2, 0))
    rebuilt = dict(accounts) | {accounts[0][0]: Account(1, 1), b"\x00" * 32: Account(2, 0)}
    assert ov.root() == Ledger(rebuilt.items()).root()


def test_a_reorg_rewinds_the_state_to_the_fork(tmp_path: Path) -> None:
    chain, keys, clock = funded(tmp_path)
    extend(chain, keys, clock, 2)
    assert commit(chain, keys, clock, [pay(ALICE, 0, BOB, 100)]) is None  # ours, at 3
    assert chain.ledger.get(BOB.node_id) == Account(100, 0)
    theirs = branch(chain, keys, 2, 3, txs_at={4: [pay(ALICE, 0, BOB, 7)]})
    clock.ms = theirs[-1].header.timestamp_ms
    res = chain.reorg(theirs, max_depth=64)
    assert res.error is None and res.adopted
    assert chain.ledger.get(BOB.node_id) == Account(7, 0)
    assert chain.ledger.get(ALICE.node_id) == Account(993, 1)
    assert chain.ledger.root() == chain.tip.header.state_root


def test_a_restart_replays_the_state_and_checks_it_against_the_tip(tmp_path: Path) -> None:
    chain, keys, clock = funded(tmp_path)
    assert commit(chain, keys, clock, [pay(ALICE, 3, BOB, 40)]) is None
    extend(chain, keys, clock, 3)
    root = chain.ledger.root()
    chain.store.close()
    again = Chain(Store(tmp_path / "chain.sqlite"), chain.genesis, clock_ms=clock)
    assert again.ledger.root() == root and again.ledger.get(BOB.node_id) == Account(40, 0)
    again.store.close()
    # the same blocks under a genesis with other allocations do not add up: refused at start
    other = msgspec.structs.replace(chain.genesis, allocations=[(ALICE.node_id, 1000)])
    assert other.block().hash == chain.genesis.block().hash
    tampered = msgspec.structs.replace(chain.genesis, allocations=[(ALICE.node_id, 999)])
    with pytest.raises(StoreError):
        Chain(Store(tmp_path / "chain.sqlite"), tampered, clock_ms=clock)


def test_cached_roots_follow_every_change() -> None:
    """Roots are cached (an empty block's state is its parent's): a ledger's root after a
    write or a rewind, and an overlay's after each set, equal the root built from scratch."""
    rng = random.Random(11)
    accounts = [(rng.randbytes(32), Account(rng.randrange(10**6), 0)) for _ in range(50)]
    led = Ledger(accounts, undo_depth=4)
    before = led.root()
    empty = Overlay(Overlay(led))
    assert empty.root() == before
    ov = Overlay(led)
    ov.set(accounts[3][0], Account(7, 1))
    first = ov.root()
    assert first == Ledger((dict(accounts) | {accounts[3][0]: Account(7, 1)}).items()).root()
    ov.set(accounts[4][0], None)
    state = dict(accounts) | {accounts[3][0]: Account(7, 1)}
    del state[accounts[4][0]]
    assert ov.root() == Ledger(state.items()).root() != first
    assert Overlay(ov).root() == ov.root()
    led._undo.append((1, led._write(ov.changes)))
    assert led.root() == Ledger(state.items()).root()
    led.rewind(0)
    assert led.root() == before


def test_execute_leaves_nothing_behind_on_failure() -> None:
    ledger = Ledger([(ALICE.node_id, Account(5, 0))])
    ov = Overlay(ledger)
    with pytest.raises(Exception, match="holds 5"):
        execute(pay(ALICE, 0, BOB, 6), ov)  # type: ignore[arg-type]
    assert ov.changes == {}


def test_genesis_allocations_round_trip_and_are_checked() -> None:
    spec, _ = lab_genesis(1, "s", "n", T0, ChainParams(), allocations=[(ALICE.node_id, 5)])
    again = parse_genesis(spec.to_json())
    assert again == spec and again.block().hash == spec.block().hash
    bad = spec.to_json() | {"allocations": {"ab": 5}}
    with pytest.raises(Exception, match="allocations"):
        parse_genesis(bad)
