"""`netdiag node verify`: a real SQLite store written by the node's own Chain, checked offline;
then tampered with (a byte of a signature, a deleted row, a re-signed block by the wrong
validator, a forged genesis, a rewritten link) — exit 5 naming the first bad height, and the
store unchanged by the check."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import msgspec
import pytest

from netdiag.cli.main import main
from netdiag.node.crypto import Identity
from netdiag.node.genesis import GenesisSpec
from netdiag.node.model import BLOCK_DOMAIN, Block, decode_block
from tests.unit.node.chainkit import T0, Clock, extend, lab, next_block, open_chain, txs

Cap = pytest.CaptureFixture[str]


def build(tmp: Path, n: int = 12) -> tuple[Path, Path, GenesisSpec, list[Identity]]:
    spec, keys = lab(epoch=4)
    clock = Clock(T0)
    chain = open_chain(tmp, spec, clock)
    extend(chain, keys, clock, 3)
    with_txs = next_block(chain, keys, txs(3, keys[0]))  # scheduled producer, 3 txs
    clock.ms = with_txs.header.timestamp_ms
    assert chain.submit(with_txs).error is None
    extend(chain, keys, clock, n - 4)
    chain.store.close()
    gen = tmp / "genesis.json"
    gen.write_text(json.dumps(spec.to_json()))
    return tmp, gen, spec, keys


def verify(capsys: Cap, data: Path, gen: Path) -> tuple[int, dict[str, object], str]:
    code = main(["node", "verify", "--data-dir", str(data), "--genesis", str(gen), "--json"])
    out = capsys.readouterr()
    doc = json.loads(out.out) if out.out.strip() else {}
    return code, doc, out.err


def rewrite(data: Path, height: int, block: Block) -> None:
    db = sqlite3.connect(data / "chain.sqlite")
    db.execute(
        "UPDATE blocks SET hash = ?, prev_hash = ?, data = ? WHERE height = ?",
        (block.hash, block.header.prev_hash, block.encode(), height),
    )
    db.commit()
    db.close()


def stored(data: Path, height: int) -> Block:
    db = sqlite3.connect(data / "chain.sqlite")
    raw = db.execute("SELECT data FROM blocks WHERE height = ?", (height,)).fetchone()[0]
    db.close()
    return decode_block(raw)


def test_valid_chain_passes_and_is_not_written(tmp_path: Path, capsys: Cap) -> None:
    data, gen, _spec, _keys = build(tmp_path)
    before = (data / "chain.sqlite").read_bytes()
    code, doc, _ = verify(capsys, data, gen)
    assert code == 0 and doc["ok"] is True and doc["bad_height"] is None
    assert doc["tip"] == 12 and doc["checked"] == 13  # genesis + 12 blocks
    assert (data / "chain.sqlite").read_bytes() == before


def test_flipped_signature_byte(tmp_path: Path, capsys: Cap) -> None:
    data, gen, _, _ = build(tmp_path)
    b = stored(data, 7)
    sig = bytearray(b.signature)
    sig[0] ^= 1
    rewrite(data, 7, msgspec.structs.replace(b, signature=bytes(sig)))
    code, doc, err = verify(capsys, data, gen)
    assert code == 5 and doc["bad_height"] == 7 and doc["reason"] == "signature"
    assert "netdiag: error: block 7 is bad (signature)" in err


def test_gap_wrong_producer_and_broken_link(tmp_path: Path, capsys: Cap) -> None:
    data, gen, _, keys = build(tmp_path)
    # re-signed by a validator that was not scheduled: hash and signature are fine
    b = stored(data, 9)
    other = next(k for k in keys if k.node_id != b.header.producer)
    hdr = msgspec.structs.replace(b.header, producer=other.node_id)
    h = hdr.compute_hash()
    forged = Block(hdr, h, other.sign(BLOCK_DOMAIN + h), b.txs)
    rewrite(data, 9, forged)
    code, doc, _ = verify(capsys, data, gen)
    assert code == 5 and doc["bad_height"] == 9 and doc["reason"] == "producer"
    # a rewritten link below it is found first
    db = sqlite3.connect(data / "chain.sqlite")
    db.execute("DELETE FROM txs WHERE height = 5")
    db.execute("DELETE FROM blocks WHERE height = 5")
    db.commit()
    db.close()
    code, doc, _ = verify(capsys, data, gen)
    assert code == 5 and doc["bad_height"] == 5 and doc["reason"] == "gap"


def test_other_genesis_and_missing_store(tmp_path: Path, capsys: Cap) -> None:
    data, gen, spec, _ = build(tmp_path)
    other = tmp_path / "other.json"
    doc = spec.to_json()
    doc["timestamp_ms"] = int(str(doc["timestamp_ms"])) + 1
    other.write_text(json.dumps(doc))
    code, out, _ = verify(capsys, data, other)
    assert code == 5 and out["bad_height"] == 0 and out["reason"] == "genesis"
    code, _, err = verify(capsys, tmp_path / "nowhere", gen)
    assert code == 2 and "no block store" in err
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "chain.sqlite").write_bytes(b"not sqlite" * 100)
    code, _, err = verify(capsys, tmp_path / "junk", gen)
    assert code == 5 and "not a readable block store" in err


def test_a_snapshot_started_store_backfilling_is_not_a_gap(tmp_path: Path, capsys: Cap) -> None:
    """A node started from the snapshot at 8 holds genesis and 8..12 while it backfills: ok
    (exit 0) with the base and what is still missing said; a real gap above the base, or a
    forged producer there, is still a failure."""
    src, gen, _, keys = build(tmp_path / "src")
    blocks = [stored(src, h) for h in range(13)]
    db = sqlite3.connect(src / "chain.sqlite")
    db.execute("DELETE FROM txs WHERE height BETWEEN 1 AND 7")
    db.execute("DELETE FROM blocks WHERE height BETWEEN 1 AND 7")
    db.execute("INSERT OR REPLACE INTO meta VALUES ('base', 8)")
    db.commit()
    db.close()
    code, doc, _ = verify(capsys, src, gen)
    assert code == 0 and doc["ok"] is True
    assert doc["base"] == 8 and doc["backfill_missing"] == 7 and doc["tip"] == 12
    main(["node", "verify", "--data-dir", str(src), "--genesis", str(gen)])
    assert "still backfilling (not a failure)" in capsys.readouterr().out
    b = blocks[10]
    other = next(k for k in keys if k.node_id != b.header.producer)
    hdr = msgspec.structs.replace(b.header, producer=other.node_id)
    h = hdr.compute_hash()
    rewrite(src, 10, Block(hdr, h, other.sign(BLOCK_DOMAIN + h), b.txs))
    code, doc, _ = verify(capsys, src, gen)
    assert code == 5 and doc["bad_height"] == 10 and doc["reason"] == "producer"
    db = sqlite3.connect(src / "chain.sqlite")
    db.execute("DELETE FROM blocks WHERE height = 9")
    db.commit()
    db.close()
    code, doc, _ = verify(capsys, src, gen)
    assert code == 5 and doc["bad_height"] == 9 and doc["reason"] == "gap"
