"""Offline check of a whole stored chain (`netdiag node verify`): read-only, no node running.

Every block from genesis to the tip is checked as the successor of the block below it with the
same rules a live node applies (validation.check_block): height and link, hash, producer
signature, producer schedule from the epoch entropy, timestamps, merkle root, transactions —
plus what only a store can get wrong: gaps, an index row that disagrees with the block it
indexes, a genesis block that is not the given genesis, transaction rows that do not match.

A store started from a snapshot whose history is still backfilling (meta 'base' = B > 0)
holds genesis and B..tip: that is not a gap. Block B is checked alone (index, hash, a genesis
validator's signature — its chain to genesis was verified as headers when the node joined),
B+1..tip with every rule but the state (the state at B is not replayed here), and the result
says so (``base``); the missing history 1..B-1 is reported as backfilling, not as a failure.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec

from netdiag.node.entropy import RevealCheck
from netdiag.node.errors import ValidationError
from netdiag.node.genesis import GenesisSpec
from netdiag.node.model import Block, decode_block, entropy_of
from netdiag.node.schedule import epoch_seed_height
from netdiag.node.state import genesis_ledger
from netdiag.node.validation import ChainView, check_block, check_header


@dataclass
class VerifyResult:
    checked: int  # blocks that passed, from height 0 up
    tip: int  # highest stored height (-1: no blocks)
    bad_height: int | None = None
    reason: str | None = None  # validation rule or store fault (stable label)
    detail: str = ""
    base: int = 0  # > 0: started from a snapshot at this height, 1..base-1 still backfilling

    @property
    def ok(self) -> bool:
        return self.bad_height is None


class StoreUnreadable(Exception):
    """The file is not a readable block store."""


def open_read_only(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise FileNotFoundError(path)
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        db.execute("SELECT count(*) FROM blocks").fetchone()
    except sqlite3.DatabaseError as e:
        raise StoreUnreadable(f"{path} is not a readable block store: {e}") from e
    return db


def verify_chain(
    db: sqlite3.Connection,
    genesis: GenesisSpec,
    now_ms: int,
    progress: Callable[[int, int], None] | None = None,
) -> VerifyResult:
    """Check the stored chain from block 0; stop at the first bad block."""
    try:
        db.execute("BEGIN")  # one read snapshot: the base and the rows agree (backfill runs)
        try:
            row = db.execute("SELECT max(height) FROM blocks").fetchone()
            tip = -1 if row[0] is None else int(row[0])
            r = db.execute("SELECT value FROM meta WHERE key = 'base'").fetchone()
            return _walk(db, genesis, now_ms, tip, progress, int(r[0]) if r else 0)
        finally:
            db.execute("COMMIT")
    except sqlite3.DatabaseError as e:
        raise StoreUnreadable(f"the store cannot be read: {e}") from e


def _walk(
    db: sqlite3.Connection,
    genesis: GenesisSpec,
    now_ms: int,
    tip: int,
    progress: Callable[[int, int], None] | None,
    base: int = 0,
) -> VerifyResult:
    res = VerifyResult(0, tip, base=base)

    def bad(height: int, reason: str, detail: str) -> VerifyResult:
        res.bad_height, res.reason, res.detail = height, reason, detail
        return res

    if tip < 0:
        return bad(0, "empty", "the store holds no genesis block")
    params = genesis.params
    expected_genesis = genesis.block()
    seeds: dict[int, bytes] = {}  # epoch boundary height -> the seed it gives (entropy_of)
    reveals = (
        RevealCheck(genesis.validators, genesis.entropy_anchors, genesis.entropy_span)
        if genesis.entropy_anchors
        else None
    )
    ledger = genesis_ledger(genesis.allocations, undo_depth=0)
    parent: Block | None = None
    rows = db.execute("SELECT height, hash, prev_hash, ts_ms, data FROM blocks ORDER BY height")
    for height, h, prev_hash, ts_ms, data in rows:
        expect = 0 if parent is None else parent.height + 1
        if base and expect == 1:
            expect = base  # history below the snapshot is still backfilling
        if height != expect:
            return bad(expect, "gap", f"block {expect} is missing (next stored is {height})")
        try:
            block = decode_block(bytes(data))
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            return bad(height, "format", f"block {height} does not decode: {e}")
        hdr = block.header
        if (block.hash, hdr.prev_hash, hdr.timestamp_ms, block.height) != (
            bytes(h),
            bytes(prev_hash),
            ts_ms,
            height,
        ):
            return bad(height, "index", f"block {height} disagrees with its index row")
        if parent is None:
            if block.hash != expected_genesis.hash:
                return bad(
                    0,
                    "genesis",
                    f"stored genesis {block.hash.hex()[:16]}… is not the given genesis "
                    f"{expected_genesis.hash.hex()[:16]}…",
                )
        elif height == base:
            try:  # alone: no parent stored (the node verified its header chain when joining)
                check_header(hdr, block.hash, block.signature)
                if hdr.producer not in genesis.validators:
                    raise ValidationError(f"block {height} producer is not a genesis validator")
            except ValidationError as e:
                return bad(height, e.reason, e.detail)
        else:
            view = ChainView(
                network_id=genesis.network_id,
                tip_height=parent.height,
                tip_hash=parent.hash,
                tip_timestamp_ms=parent.header.timestamp_ms,
                validators=genesis.validators,
                seed_hash=lambda hh: seeds[epoch_seed_height(hh, params.epoch_length)],
                has_block=parent.hash.__eq__,
                has_tx=functools.partial(_tx_elsewhere, db, height),
                tip_seed=entropy_of(parent),
                entropy=reveals,
                state=None if base else ledger,
            )
            try:
                check_block(block, view, params, now_ms, len(data))
            except ValidationError as e:
                return bad(height, e.reason, e.detail)
            if not base:
                ledger.advance(block)
        ntx = db.execute("SELECT count(*) FROM txs WHERE height = ?", (height,)).fetchone()[0]
        if ntx != len(block.txs):
            return bad(
                height, "tx_index", f"block {height} has {len(block.txs)} txs, index has {ntx}"
            )
        if height % params.epoch_length == 0:
            seeds[height] = entropy_of(block)
        parent = block
        res.checked += 1
        if progress is not None and height % 500 == 0:
            progress(height, tip)
    return res


def _tx_elsewhere(db: sqlite3.Connection, height: int, txid: bytes) -> bool:
    """Is this transaction recorded at another height (included twice in the chain)?"""
    row = db.execute("SELECT height FROM txs WHERE txid = ?", (txid,)).fetchone()
    return row is not None and int(row[0]) != height
