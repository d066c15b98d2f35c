"""Producer rotation, genesis determinism, store invariants."""

from __future__ import annotations

import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from netdiag.node.crypto import load_identity
from netdiag.node.errors import ConfigError, StoreError
from netdiag.node.genesis import ChainParams, lab_genesis, load_genesis, parse_genesis, write_lab
from netdiag.node.schedule import epoch_seed_height, producer_for
from netdiag.node.store import Store
from tests.unit.node.chainkit import Clock, extend, lab, next_block, open_chain


def test_producer_draw_is_deterministic_uniform_and_seed_dependent() -> None:
    vals = [bytes([i]) * 32 for i in range(4)]
    seed = b"\x07" * 32
    draws = [producer_for(vals, seed, h, 0) for h in range(1, 4001)]
    assert draws == [producer_for(vals, seed, h, 0) for h in range(1, 4001)]
    counts = Counter(draws)
    assert set(counts) == set(vals) and min(counts.values()) > 850  # ~1000 each
    assert draws != [producer_for(vals, b"\x08" * 32, h, 0) for h in range(1, 4001)]
    assert draws != [producer_for(vals, seed, h, 1) for h in range(1, 4001)]


def test_epoch_seed_is_last_block_of_previous_epoch() -> None:
    assert [epoch_seed_height(h, 100) for h in (1, 100, 101, 200, 201)] == [0, 0, 100, 100, 200]


def test_rotation_reseeds_at_epoch_boundary(tmp_path: Path) -> None:
    spec, keys = lab(validators=5, epoch=4)
    clock = Clock()
    chain = open_chain(tmp_path, spec, clock)
    blocks = extend(chain, keys, clock, 9)
    assert chain.seed_hash(5) == blocks[3].hash and chain.seed_hash(9) == blocks[7].hash
    assert len({b.header.producer for b in blocks}) > 1


def test_genesis_is_deterministic_and_commits_to_params(tmp_path: Path) -> None:
    a, ka = lab_genesis(3, "s", "net", 1, ChainParams())
    b, kb = lab_genesis(3, "s", "net", 1, ChainParams())
    assert a.block().hash == b.block().hash and [k.node_id for k in ka] == [k.node_id for k in kb]
    c, _ = lab_genesis(3, "s", "net", 1, ChainParams(slot_ms=999))
    assert c.block().hash != a.block().hash
    paths = write_lab(tmp_path, a, ka)
    assert load_genesis(tmp_path / "genesis.json").block().hash == a.block().hash
    assert load_identity(paths[2]).node_id == ka[1].node_id
    assert (paths[1].stat().st_mode & 0o777) == 0o600


def test_genesis_file_errors() -> None:
    with pytest.raises(ConfigError, match="at least one validator"):
        parse_genesis({"network_id": "n", "timestamp_ms": 0, "validators": []})
    with pytest.raises(ConfigError, match="32-byte"):
        parse_genesis({"network_id": "n", "timestamp_ms": 0, "validators": ["abcd"]})
    with pytest.raises(ConfigError, match="malformed"):
        parse_genesis({"network_id": "n"})


def test_store_refuses_other_genesis(tmp_path: Path) -> None:
    spec, _ = lab()
    open_chain(tmp_path, spec, Clock()).store.close()
    other, _ = lab(validators=2)
    with pytest.raises(StoreError, match="belongs to genesis"):
        open_chain(tmp_path, other, Clock())


def test_store_refuses_non_successor(tmp_path: Path) -> None:
    spec, keys = lab()
    clock = Clock()
    chain = open_chain(tmp_path, spec, clock)
    b1 = next_block(chain, keys)
    chain.store.commit_block(b1)
    with pytest.raises(StoreError, match="does not extend"):
        chain.store.commit_block(b1)
    assert chain.store.tip() == (1, b1.hash)


def test_store_reopens_and_detects_gap(tmp_path: Path) -> None:
    spec, keys = lab()
    clock = Clock()
    chain = open_chain(tmp_path, spec, clock)
    blocks = extend(chain, keys, clock, 5)
    chain.store.close()
    again = open_chain(tmp_path, spec, clock)
    assert again.height == 5 and again.tip_hash == blocks[-1].hash
    again.store.close()
    db = sqlite3.connect(tmp_path / "chain.sqlite")
    db.execute("PRAGMA foreign_keys=OFF")
    db.execute("DELETE FROM blocks WHERE height = 3")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="gap"):
        Store(tmp_path / "chain.sqlite").verify()


def test_store_detects_tampered_block(tmp_path: Path) -> None:
    spec, keys = lab()
    clock = Clock()
    chain = open_chain(tmp_path, spec, clock)
    extend(chain, keys, clock, 2)
    chain.store.close()
    db = sqlite3.connect(tmp_path / "chain.sqlite")
    db.execute("UPDATE blocks SET data = x'00' WHERE height = 2")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="does not decode"):
        Store(tmp_path / "chain.sqlite").verify()


def test_store_uses_wal(tmp_path: Path) -> None:
    s = Store(tmp_path / "c.sqlite")
    assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
