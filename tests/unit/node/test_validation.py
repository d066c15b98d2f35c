"""Every block and transaction validation rule, each rejected with its own error."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from netdiag.node import validation as v
from netdiag.node.crypto import Identity
from netdiag.node.model import BLOCK_DOMAIN, Block, BlockHeader, Tx, make_block, merkle_root
from tests.unit.node.chainkit import SLOT, Clock, extend, lab, next_block, open_chain, txs


@pytest.fixture
def env(tmp_path: Path):  # type: ignore[no-untyped-def]
    spec, keys = lab()
    clock = Clock()
    chain = open_chain(tmp_path, spec, clock)
    extend(chain, keys, clock, 3)
    clock.ms = chain.tip.header.timestamp_ms + 10 * SLOT  # the next height's rounds have begun
    return chain, keys, clock


def resign(block: Block, key: Identity, **hdr: object) -> Block:
    """Rebuild ``block`` with header fields changed, hashed and signed correctly by ``key``."""
    header = msgspec.structs.replace(block.header, **hdr)
    h = header.compute_hash()
    return Block(header, h, key.sign(BLOCK_DOMAIN + h), block.txs)


def key_of(keys: list[Identity], node_id: bytes) -> Identity:
    return next(k for k in keys if k.node_id == node_id)


def assert_rejected(chain, block: Block, err: type[v.ValidationError]) -> None:  # type: ignore[no-untyped-def]
    tip = chain.height
    res = chain.submit(block)
    assert type(res.error) is err, res.error
    assert not res.accepted
    assert chain.height == tip == chain.store.tip()[0]
    assert not chain.store.has_block(block.hash)


def test_valid_block_with_txs_is_committed(env) -> None:  # type: ignore[no-untyped-def]
    chain, keys, _ = env
    b = next_block(chain, keys, txs(5, keys[0]))
    res = chain.submit(b)
    assert res.error is None and res.accepted == [b]
    assert chain.store.tip() == (4, b.hash)
    assert all(chain.store.has_tx(t.txid()) for t in b.txs)


def test_orphan_is_held_not_stored_then_connected(env) -> None:  # type: ignore[no-untyped-def]
    chain, keys, _clock = env
    b4 = next_block(chain, keys)
    b5 = _successor_of(chain, keys, b4)
    res = chain.submit(b5)
    assert isinstance(res.error, v.Orphan) and res.orphaned
    assert not chain.store.has_block(b5.hash) and len(chain.orphans) == 1
    res = chain.submit(b4)
    assert [b.height for b in res.accepted] == [4, 5]
    assert chain.store.tip() == (5, b5.hash) and len(chain.orphans) == 0


def _successor_of(chain, keys: list[Identity], parent: Block) -> Block:  # type: ignore[no-untyped-def]
    from netdiag.node.schedule import epoch_seed_height, producer_for

    h = parent.height + 1
    seed_h = epoch_seed_height(h, chain.params.epoch_length)
    seed = parent.hash if seed_h == parent.height else chain.store.hash_at(seed_h)
    ts = parent.header.timestamp_ms + SLOT
    prod = producer_for(chain.genesis.validators, seed, h, 0)
    root = parent.header.state_root  # no txs: the state does not change
    return make_block(
        key_of(keys, prod), chain.genesis.network_id, h, parent.hash, ts, [], state_root=root
    )


def test_block_far_ahead_is_orphan(env) -> None:  # type: ignore[no-untyped-def]
    chain, keys, _ = env
    b = next_block(chain, keys)
    far = resign(b, key_of(keys, b.header.producer), height=10, prev_hash=bytes(32))
    res = chain.submit(far)
    assert isinstance(res.error, v.Orphan)
    assert not chain.store.has_block(far.hash)


def test_prev_hash_not_tip_is_rejected(env) -> None:  # type: ignore[no-untyped-def]
    chain, keys, _ = env
    b = next_block(chain, keys)
    fork = resign(b, key_of(keys, b.header.producer), prev_hash=chain.store.hash_at(2))
    assert_rejected(chain, fork, v.BadPrevHash)


def test_wrong_height_is_rejected(env) -> None:  # type: ignore[no-untyped-def]
    chain, keys, _ = env
    b = next_block(chain, keys)
    assert_rejected(chain, resign(b, key_of(keys, b.header.producer), height=3), v.BadHeight)


def test_hash_mismatch_is_rejected(env) -> None:  # type: ignore[no-untyped-def]
    chain, keys, _ = env
    b = next_block(chain, keys)
    forged = Block(
        msgspec.structs.replace(b.header, timestamp_ms=b.header.timestamp_ms + 1),
        b.hash,
        b.signature,
        b.txs,
    )
    assert_rejected(chain, forged, v.BadHash)


def test_bad_signature_is_rejected(env) -> None:  # type: ignore[no-untyped-def]
    chain, keys, _ = env
    b = next_block(chain, keys)
    other = next(k for k in keys if k.node_id != b.header.producer)
    assert_rejected(
        chain, Block(b.header, b.hash, other.sign(BLOCK_DOMAIN + b.hash), b.txs), v.BadSignature
    )
    assert_rejected(chain, Block(b.header, b.hash, b"\x00" * 3, b.txs), v.BadSignature)


def test_unscheduled_producer_is_rejected(env) -> None:  # type: ignore[no-untyped-def]
    chain, keys, _ = env
    b = next_block(chain, keys)
    other = next(k for k in keys if k.node_id != b.header.producer)
    assert_rejected(chain, resign(b, other, producer=other.node_id), v.WrongProducer)
    outsider = Identity.generate()
    assert_rejected(chain, resign(b, outsider, producer=outsider.node_id), v.WrongProducer)


def test_later_round_producer_is_accepted(env) -> None:  # type: ignore[no-untyped-def]
    chain, keys, clock = env
    b = next_block(chain, keys, round_=2)
    clock.ms = b.header.timestamp_ms
    assert chain.submit(b).accepted == [b]


def test_merkle_root_mismatch_is_rejected(env) -> None:  # type: ignore[no-untyped-def]
    chain, keys, _ = env
    b = next_block(chain, keys, txs(3, keys[0]))
    swapped = Block(b.header, b.hash, b.signature, [*b.txs[:2], txs(1, keys[1], 99)[0]])
    assert_rejected(chain, swapped, v.BadMerkleRoot)


def test_bad_tx_signature_is_rejected(env) -> None:  # type: ignore[no-untyped-def]
    chain, keys, _ = env
    good = txs(2, keys[0])
    bad = msgspec.structs.replace(good[1], payload=b"tampered")
    b = next_block(chain, keys, [good[0], bad])
    assert_rejected(chain, b, v.BadTxSignature)


def test_timestamp_too_soon_and_too_far_ahead(env) -> None:  # type: ignore[no-untyped-def]
    chain, keys, clock = env
    b = next_block(chain, keys)
    k = key_of(keys, b.header.producer)
    soon = resign(b, k, timestamp_ms=chain.tip.header.timestamp_ms + SLOT - 1)
    assert_rejected(chain, soon, v.BadTimestamp)
    clock.ms = chain.tip.header.timestamp_ms  # block would be a full slot in the future
    late = next_block(chain, keys, round_=int(chain.params.max_future_ms / SLOT) + 1)
    assert_rejected(chain, late, v.EarlyBlock)


def test_a_block_for_the_next_round_is_early_until_that_round_begins(env) -> None:  # type: ignore[no-untyped-def]
    chain, keys, clock = env
    tip_ts = chain.tip.header.timestamp_ms
    clock.ms = tip_ts + SLOT  # round 0 of the next height has just begun here
    nxt = next_block(chain, keys, round_=1)  # stamped one slot later: round 1
    tolerance = v.clock_tolerance_ms(chain.params)
    assert 0 < tolerance < SLOT
    assert_rejected(chain, nxt, v.EarlyBlock)
    clock.ms = nxt.header.timestamp_ms - tolerance  # round 1 about to begin: within tolerance
    res = chain.submit(nxt)
    assert res.error is None and res.accepted == [nxt]


def test_oversized_block_is_rejected(tmp_path: Path) -> None:
    spec, keys = lab(max_block_txs=2)
    clock = Clock()
    chain = open_chain(tmp_path, spec, clock)
    assert_rejected(chain, next_block(chain, keys, txs(3, keys[0])), v.TooLarge)
    spec2, keys2 = lab(max_block_bytes=600)
    chain2 = open_chain(tmp_path / "b", spec2, clock)
    assert_rejected(chain2, next_block(chain2, keys2, txs(8, keys2[0])), v.TooLarge)


def test_tx_count_must_match_header(env) -> None:  # type: ignore[no-untyped-def]
    chain, keys, _ = env
    b = next_block(chain, keys, txs(2, keys[0]))
    assert_rejected(chain, resign(b, key_of(keys, b.header.producer), tx_count=3), v.TooLarge)


def test_duplicate_tx_in_chain_or_block_is_rejected(env) -> None:  # type: ignore[no-untyped-def]
    chain, keys, clock = env
    t = txs(1, keys[0])
    b = next_block(chain, keys, t)
    clock.ms = b.header.timestamp_ms
    assert chain.submit(b).accepted
    clock.ms += SLOT  # the next height's round 0 has begun
    assert_rejected(chain, next_block(chain, keys, t), v.DuplicateTx)
    t2 = txs(1, keys[0], 50)
    assert_rejected(chain, next_block(chain, keys, t2 + t2), v.DuplicateTx)


def test_wrong_network_is_rejected(env) -> None:  # type: ignore[no-untyped-def]
    chain, keys, _ = env
    b = next_block(chain, keys)
    assert_rejected(
        chain, resign(b, key_of(keys, b.header.producer), network_id="other"), v.WrongNetwork
    )


def test_duplicate_block_is_reported_not_rejected(env) -> None:  # type: ignore[no-untyped-def]
    chain, _, _ = env
    res = chain.submit(chain.tip)
    assert res.duplicate and res.error is None and not res.accepted


def test_check_tx_rules() -> None:
    spec, keys = lab(max_tx_bytes=200)
    (t,) = txs(1, keys[0])
    v.check_tx(t, spec.params)
    with pytest.raises(v.BadTxSignature):
        v.check_tx(msgspec.structs.replace(t, nonce=7), spec.params)
    with pytest.raises(v.BadFormat):
        v.check_tx(msgspec.structs.replace(t, sender=b"short"), spec.params)
    with pytest.raises(v.TooLarge):
        v.check_tx(msgspec.structs.replace(t, payload=b"x" * 300), spec.params)


def test_merkle_root_properties() -> None:
    leaves = [bytes([i]) * 32 for i in range(5)]
    assert merkle_root(leaves) != merkle_root(leaves[:4])
    # no CVE-2012-2459 style collision: duplicating the odd last leaf changes the root
    assert merkle_root(leaves) != merkle_root([*leaves, leaves[-1]])
    assert merkle_root(leaves[:1]) != leaves[0]
    assert merkle_root(leaves) == merkle_root(list(leaves))


def test_header_encoding_is_canonical() -> None:
    h = BlockHeader(1, "n", 1, bytes(32), 5, bytes(32), bytes(32), 0)
    again = msgspec.msgpack.decode(h.encode(), type=BlockHeader)
    assert again.encode() == h.encode() and again.compute_hash() == h.compute_hash()
    with pytest.raises(msgspec.ValidationError):
        msgspec.msgpack.decode(msgspec.msgpack.encode([1, "n", 1]), type=BlockHeader)
    assert Tx.__struct_config__.forbid_unknown_fields


def test_orphans_must_still_be_authentic(env) -> None:  # type: ignore[no-untyped-def]
    chain, keys, _ = env
    b = next_block(chain, keys)
    k = key_of(keys, b.header.producer)
    unsigned_far = Block(
        msgspec.structs.replace(b.header, height=50, prev_hash=b"\x09" * 32), b.hash, b"", []
    )
    assert_rejected(chain, unsigned_far, v.BadHash)
    far = resign(b, k, height=50, prev_hash=b"\x09" * 32)
    forged = Block(far.header, far.hash, b"\x01" * 64, [])
    assert_rejected(chain, forged, v.BadSignature)
    outsider = Identity.generate()
    assert_rejected(chain, resign(far, outsider, producer=outsider.node_id), v.WrongProducer)
    assert len(chain.orphans) == 0
    stale = resign(b, k, height=2, prev_hash=b"\x09" * 32)  # below the tip, unknown parent
    assert_rejected(chain, stale, v.BadPrevHash)


def test_a_small_order_key_cannot_sign_for_everyone() -> None:
    """OpenSSL's Ed25519 verify accepts the identity point as key and as R with S = 0 for any
    message: a transaction "from" that key (or a handshake as that node id) would need no
    secret. The rule refuses every small-order point as a key and as R, either sign bit."""
    from netdiag.node import crypto

    spec, keys = lab()
    (t,) = txs(1, keys[0])
    identity = b"\x01" + bytes(31)
    forged = msgspec.structs.replace(t, sender=identity, signature=identity + bytes(32))
    with pytest.raises(v.BadTxSignature):
        v.check_tx(forged, spec.params)
    for point in crypto.SMALL_ORDER:
        for enc in (point, point[:31] + bytes([point[31] | 0x80])):
            assert crypto.small_order(enc)
            assert not crypto.verify(enc, enc + bytes(32), b"any message")
    assert not crypto.small_order(keys[0].node_id) and not crypto.small_order(t.signature[:32])
    assert crypto.verify(t.sender, t.signature, t.signing_bytes())  # honest ones still verify
