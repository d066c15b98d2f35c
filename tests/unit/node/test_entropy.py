"""Epoch entropy by hash-chain commit–reveal (netdiag/node/entropy.py): reveals check against
the genesis anchors, the mix is what seeds an epoch, a block without its reveal is invalid, and
a producer cannot grind the next epoch's seed by varying its block."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import msgspec
import pytest

from netdiag.cli.main import main
from netdiag.node.chain import Chain
from netdiag.node.crypto import Identity
from netdiag.node.entropy import HashChain, RevealCheck, iterate, lab_secret, next_mix
from netdiag.node.genesis import ChainParams, GenesisSpec, lab_genesis
from netdiag.node.model import BLOCK_DOMAIN, Block, Tx, entropy_of, make_block
from netdiag.node.state import Overlay, execute
from netdiag.node.store import Store
from netdiag.node.validation import BadEntropy
from tests.unit.node.chainkit import SLOT, T0, Clock, txs

SPAN = 600


def anchored(tmp: Path) -> tuple[GenesisSpec, list[Identity], dict[bytes, HashChain], Chain]:
    spec, keys = lab_genesis(
        3, "ent", "nd-ent", T0, ChainParams(epoch_length=4, slot_ms=SLOT), entropy_span=SPAN
    )
    chains = {k.node_id: HashChain(lab_secret("ent", i), SPAN) for i, k in enumerate(keys)}
    clock = Clock(T0)
    return spec, keys, chains, Chain(Store(tmp / "chain.sqlite"), spec, clock_ms=clock)


def successor(
    chain: Chain,
    keys: list[Identity],
    chains: dict[bytes, HashChain],
    payload: list[Tx] | None = None,
    reveal: bytes | None = None,
) -> Block:
    ts = chain.tip.header.timestamp_ms + SLOT
    producer, height, _ = chain.scheduled_producer(ts)
    key = next(k for k in keys if k.node_id == producer)
    r = chains[producer].reveal(height) if reveal is None else reveal
    mix = next_mix(entropy_of(chain.tip), r)
    state = Overlay(chain.ledger)
    for tx in payload or []:
        execute(tx, state)
    net = chain.genesis.network_id
    return make_block(key, net, height, chain.tip_hash, ts, payload or [], r, mix, state.root())


def grow(chain: Chain, keys: list[Identity], chains: dict[bytes, HashChain], n: int) -> None:
    for _ in range(n):
        b = successor(chain, keys, chains)
        chain.clock_ms.ms = b.header.timestamp_ms  # type: ignore[attr-defined]
        res = chain.submit(b)
        assert res.error is None, res.error


def test_hash_chain_reveals_verify_against_the_anchor_only_in_order() -> None:
    hc = HashChain(b"\x07" * 32, 1000)
    assert iterate(hc.reveal(1), 1) == hc.anchor and iterate(hc.reveal(777), 777) == hc.anchor
    assert hc.reveal(999) != hc.reveal(1000)
    with pytest.raises(ValueError):
        hc.reveal(1001)
    me, other = b"a" * 32, b"b" * 32
    check = RevealCheck([me, other], [hc.anchor, HashChain(b"\x08" * 32, 1000).anchor], 1000)
    assert check.valid(me, 10, hc.reveal(10))
    assert check.valid(me, 40, hc.reveal(40))  # from the cached element at 10
    assert check.valid(me, 20, hc.reveal(20))  # below the cache: from the anchor
    assert not check.valid(me, 41, hc.reveal(40))  # another height's element
    assert not check.valid(other, 40, hc.reveal(40))  # another validator's chain
    assert not check.valid(me, 50, b"\x00" * 32) and not check.valid(me, 50, b"")


def test_blocks_carry_reveals_and_the_mix_seeds_the_epoch(tmp_path: Path) -> None:
    spec, keys, chains, chain = anchored(tmp_path)
    grow(chain, keys, chains, 9)
    b4 = chain.store.block_at(4)
    assert b4 is not None and len(b4.header.reveal) == 32 and b4.header.mix != b4.hash
    assert chain.seed_hash(5) == b4.header.mix  # epoch 2 is seeded by block 4's mix
    assert chain.seed_hash(1) == spec.block().hash  # epoch 1 by the genesis block
    b1 = chain.store.block_at(1)
    assert b1 is not None and b1.header.mix == next_mix(spec.block().hash, b1.header.reveal)


def test_withheld_or_wrong_reveals_are_invalid(tmp_path: Path) -> None:
    _, keys, chains, chain = anchored(tmp_path)
    grow(chain, keys, chains, 2)
    ts = chain.tip.header.timestamp_ms + SLOT
    chain.clock_ms.ms = ts  # type: ignore[attr-defined]
    producer, height, _ = chain.scheduled_producer(ts)
    key = next(k for k in keys if k.node_id == producer)
    root = chain.tip.header.state_root
    withheld = make_block(key, "nd-ent", height, chain.tip_hash, ts, [], state_root=root)
    wrong_height = successor(chain, keys, chains, reveal=chains[producer].reveal(height + 1))
    good = successor(chain, keys, chains)
    bad_mix_hdr = msgspec.structs.replace(good.header, mix=b"\x00" * 32)
    h = bad_mix_hdr.compute_hash()
    bad_mix = Block(bad_mix_hdr, h, key.sign(BLOCK_DOMAIN + h), [])
    for b in (withheld, wrong_height, bad_mix):
        res = chain.submit(b)
        assert isinstance(res.error, BadEntropy), res.error
    assert chain.height == 2 and chain.submit(good).error is None


def test_the_boundary_producer_cannot_grind_the_next_seed(tmp_path: Path) -> None:
    """Varying what a producer controls (transactions, hence the block hash) leaves the next
    epoch's seed unchanged: it is fixed by the reveal committed at genesis."""
    _, keys, chains, chain = anchored(tmp_path)
    grow(chain, keys, chains, 3)  # the next block (4) closes epoch 1
    payer = Identity.generate()
    variants = [successor(chain, keys, chains, txs(n, payer)) for n in range(4)]
    assert len({b.hash for b in variants}) == 4  # a grinder's candidates...
    assert len({b.header.mix for b in variants}) == 1  # ...all give the same seed


def test_verify_checks_reveals_offline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec, keys, chains, chain = anchored(tmp_path)
    grow(chain, keys, chains, 8)
    chain.store.close()
    gen = tmp_path / "genesis.json"
    gen.write_text(json.dumps(spec.to_json()))
    argv = ["node", "verify", "--data-dir", str(tmp_path), "--genesis", str(gen), "--json"]
    assert main(argv) == 0 and json.loads(capsys.readouterr().out)["checked"] == 9
    db = sqlite3.connect(tmp_path / "chain.sqlite")
    raw = db.execute("SELECT data FROM blocks WHERE height = 6").fetchone()[0]
    b = msgspec.msgpack.decode(raw, type=Block)
    producer = next(k for k in keys if k.node_id == b.header.producer)
    hdr = msgspec.structs.replace(b.header, reveal=b"\x01" * 32)  # re-signed by its producer
    h = hdr.compute_hash()
    forged = Block(hdr, h, producer.sign(BLOCK_DOMAIN + h), b.txs)
    db.execute("UPDATE blocks SET hash = ?, data = ? WHERE height = 6", (h, forged.encode()))
    db.execute("UPDATE blocks SET prev_hash = ? WHERE height = 7", (h,))
    db.commit()
    db.close()
    assert main(argv) == 5
    out = json.loads(capsys.readouterr().out)
    assert out["bad_height"] == 6 and out["reason"] == "entropy"


def test_a_synced_segment_is_checked_across_epochs(tmp_path: Path) -> None:
    """Parallel sync verifies a downloaded segment block by block, seeds from the segment's own
    boundary mixes; a forged reveal inside it stops the prefix there."""
    from netdiag.node.segment import verify_segment

    spec, keys, chains, source = anchored(tmp_path / "a")
    grow(source, keys, chains, 13)
    blocks = [b for h in range(1, 14) if (b := source.store.block_at(h)) is not None]
    joiner = Chain(Store(tmp_path / "b" / "chain.sqlite"), spec, clock_ms=Clock(10**15))
    res = verify_segment(joiner, blocks, 10**15)
    assert res.error is None and len(res.verified) == 13
    b = blocks[9]
    key = next(k for k in keys if k.node_id == b.header.producer)
    hdr = msgspec.structs.replace(b.header, reveal=chains[b.header.producer].reveal(9))
    h = hdr.compute_hash()
    res = verify_segment(
        joiner, [*blocks[:9], Block(hdr, h, key.sign(BLOCK_DOMAIN + h), [])], 10**15
    )
    assert len(res.verified) == 9 and isinstance(res.error, BadEntropy)
