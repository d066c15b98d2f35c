"""SQLite block store (WAL). A block and its transactions commit in one transaction.

Crash safety rests on SQLite: WAL + synchronous=FULL makes every COMMIT durable before
``commit_block`` returns, and an interrupted transaction is rolled back on the next open. The
store also refuses, inside the same transaction, any block that is not exactly tip + 1 with
prev_hash == tip hash, so no bug upstream can leave a gap.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec

from netdiag.node.errors import StoreError
from netdiag.node.model import Block, decode_block
from netdiag.node.validation import check_header

# Blocks the node may hold committed in memory ahead of the disk (writer.py) before it stops
# producing, taking gossiped blocks and committing sync segments: one sync window.
MAX_PENDING_BLOCKS = 1024

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS blocks (
    height    INTEGER PRIMARY KEY,
    hash      BLOB NOT NULL UNIQUE,
    prev_hash BLOB NOT NULL,
    ts_ms     INTEGER NOT NULL,
    data      BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS txs (
    txid   BLOB PRIMARY KEY,
    height INTEGER NOT NULL REFERENCES blocks(height),
    idx    INTEGER NOT NULL
);
"""


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, nothing implicit.
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.executescript(SCHEMA)

    @classmethod
    def reader(cls, path: Path) -> Store:
        """A read-only view of an existing store on its own connection (another thread may
        use it while the node writes: WAL readers see the last commit and are not blocked)."""
        store = cls.__new__(cls)
        store.path = path
        store.db = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro",
            uri=True,
            isolation_level=None,
            check_same_thread=False,
        )
        return store

    def close(self) -> None:
        self.db.close()

    # -- durability (writer.WriteBehindStore commits later, on its own thread) -------------

    @property
    def pending_blocks(self) -> int:
        """Blocks committed in memory, not yet on disk: none, commits here are synchronous."""
        return 0

    def durable_tip(self) -> Block | None:
        """The highest block on disk, or None when every commit is durable on return."""
        return None

    def after_durable(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` once everything committed so far is on disk: here, now."""
        fn()

    # -- genesis and start-up --------------------------------------------------------------

    def init_genesis(self, genesis: Block) -> None:
        """Store block 0 on first start; on later starts insist it is the same genesis."""
        stored = self.db.execute("SELECT hash FROM blocks WHERE height = 0").fetchone()
        if stored is None:
            self._insert(genesis, expect_height=0, expect_prev=genesis.header.prev_hash)
        elif stored[0] != genesis.hash:
            raise StoreError(
                f"store {self.path} belongs to genesis {stored[0].hex()[:16]}…, not "
                f"{genesis.hash.hex()[:16]}… — use another --data-dir or the matching genesis"
            )

    def verify(self, depth: int = 64) -> int:
        """Check the stored chain on start: no gaps, the tip decodes and hashes correctly, and
        the last ``depth`` blocks link. Returns the tip height."""
        row = self.db.execute("SELECT count(*), max(height) FROM blocks").fetchone()
        count, tip = int(row[0]), row[1]
        if tip is None:
            raise StoreError(f"store {self.path} has no genesis block")
        base = self.base_height()
        if base:  # started from a snapshot: base..tip contiguous, history below backfilling
            above = self.db.execute("SELECT count(*) FROM blocks WHERE height >= ?", (base,))
            if above.fetchone()[0] != tip - base + 1:
                raise StoreError(f"store {self.path} has a gap above its snapshot base {base}")
        elif count != tip + 1:
            raise StoreError(f"store {self.path} has {count} blocks up to height {tip}: a gap")
        rows = self.db.execute(
            "SELECT height, hash, prev_hash, data FROM blocks WHERE height > ? ORDER BY height",
            (max(tip - depth, base - 1),),
        ).fetchall()
        prev: bytes | None = None
        for height, h, prev_hash, data in rows:
            try:
                block = decode_block(data)
            except msgspec.DecodeError as e:
                raise StoreError(f"stored block {height} does not decode: {e}") from e
            if block.hash != h or block.header.prev_hash != prev_hash or block.height != height:
                raise StoreError(f"stored block {height} disagrees with its index row")
            if height > 0:
                check_header(block.header, block.hash, block.signature)
            if prev is not None and prev_hash != prev:
                raise StoreError(f"stored block {height} does not link to block {height - 1}")
            prev = h
        ntx = self.db.execute("SELECT count(*) FROM txs WHERE height > ?", (tip,)).fetchone()[0]
        if ntx:
            raise StoreError(f"store {self.path} holds transactions above the tip")
        return int(tip)

    # -- a chain started from a snapshot: its lowest contiguous height (history below it is
    # backfilled downwards); 0 = the whole chain from genesis is stored

    def backfill_later(self, blocks: list[Block], done: Callable[[int | StoreError], None]) -> None:
        """``backfill``, its outcome (the new base, or why it was refused) to ``done``. Here
        at once; the node's write-behind store runs it on its writer thread (writer.py)."""
        try:
            out: int | StoreError = self.backfill(blocks)
        except StoreError as e:
            out = e
        done(out)

    def base_height(self) -> int:
        """Read once, then kept by install_base/backfill (asked on every sync tick)."""
        cached: int | None = getattr(self, "_base", None)
        if cached is None:
            r = self.db.execute("SELECT value FROM meta WHERE key = 'base'").fetchone()
            cached = self._base = int(r[0]) if r else 0
        return cached

    def install_base(self, block: Block) -> None:
        """Make ``block`` (a snapshot's, its header verified) the base of a store that holds
        only genesis, in one transaction: the chain continues from it."""
        cur = self.db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            tip = cur.execute("SELECT max(height) FROM blocks").fetchone()[0]
            if tip != 0 or block.height < 1:
                raise StoreError(f"refusing snapshot base {block.height}: the store holds {tip}")
            self._insert_rows(cur, block)
            cur.execute("INSERT OR REPLACE INTO meta VALUES ('base', ?)", (block.height,))
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        self._base = block.height

    def backfill(self, blocks: list[Block]) -> int:
        """Prepend ``blocks`` (ascending, ending right below the base, linked by hash to it)
        in one transaction; returns the new base (0 once the history reaches genesis)."""
        base = self.base_height()
        cur = self.db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            above = cur.execute("SELECT prev_hash FROM blocks WHERE height = ?", (base,))
            row = above.fetchone()
            if not base or row is None or not blocks or blocks[-1].height != base - 1:
                raise StoreError(f"refusing backfill: does not end below base {base}")
            link = bytes(row[0])
            for b in reversed(blocks):
                if b.hash != link:
                    raise StoreError(f"refusing backfill: block {b.height} does not link upwards")
                link = b.header.prev_hash
                self._insert_rows(cur, b)
            new_base = blocks[0].height
            if new_base == 1:
                genesis = cur.execute("SELECT hash FROM blocks WHERE height = 0").fetchone()
                if genesis is None or bytes(genesis[0]) != link:
                    raise StoreError("refusing backfill: block 1 does not link to genesis")
                cur.execute("DELETE FROM meta WHERE key = 'base'")
                new_base = 0
            else:
                cur.execute("UPDATE meta SET value = ? WHERE key = 'base'", (new_base,))
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        self._base = new_base
        return new_base

    # -- writes ----------------------------------------------------------------------------

    def commit_block(self, block: Block) -> None:
        """Append ``block`` atomically; it must extend the stored tip."""
        tip_h, tip_hash = self.tip()
        self._insert(block, expect_height=tip_h + 1, expect_prev=tip_hash)

    def commit_blocks(self, blocks: list[Block]) -> None:
        """Append a verified segment in ONE transaction (parallel sync commits whole prefixes):
        a crash leaves the store at the old tip or with the whole segment, never half of it."""
        if not blocks:
            return
        cur = self.db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            tip = cur.execute("SELECT height, hash FROM blocks ORDER BY height DESC LIMIT 1")
            height, prev = tip.fetchone()
            for block in blocks:
                if block.height != height + 1 or block.header.prev_hash != prev:
                    raise StoreError(
                        f"refusing segment: block {block.height} does not extend {height}"
                    )
                self._insert_rows(cur, block)
                height, prev = block.height, block.hash
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise

    def replace_above(self, fork_height: int, branch: list[Block]) -> list[Block]:
        """Reorganise atomically: drop every block above ``fork_height`` and append ``branch``
        (which must link to the block at ``fork_height``) in ONE transaction, so a crash leaves
        either the old chain or the new one. Returns the dropped blocks, lowest first."""
        cur = self.db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            row = cur.execute("SELECT hash FROM blocks WHERE height = ?", (fork_height,))
            base = row.fetchone()
            if base is None or not branch or branch[0].header.prev_hash != base[0]:
                raise StoreError(f"refusing reorg: branch does not attach at {fork_height}")
            dropped = [
                decode_block(r[0])
                for r in cur.execute(
                    "SELECT data FROM blocks WHERE height > ? ORDER BY height", (fork_height,)
                ).fetchall()
            ]
            cur.execute("DELETE FROM txs WHERE height > ?", (fork_height,))
            cur.execute("DELETE FROM blocks WHERE height > ?", (fork_height,))
            prev = base[0]
            for i, block in enumerate(branch):
                if block.height != fork_height + 1 + i or block.header.prev_hash != prev:
                    raise StoreError(f"refusing reorg: branch block {block.height} does not link")
                self._insert_rows(cur, block)
                prev = block.hash
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        return dropped

    def _insert_rows(self, cur: sqlite3.Cursor, block: Block) -> None:
        cur.execute(
            "INSERT INTO blocks (height, hash, prev_hash, ts_ms, data) VALUES (?, ?, ?, ?, ?)",
            (
                block.height,
                block.hash,
                block.header.prev_hash,
                block.header.timestamp_ms,
                block.encode(),
            ),
        )
        cur.executemany(
            "INSERT INTO txs (txid, height, idx) VALUES (?, ?, ?)",
            [(tx.txid(), block.height, i) for i, tx in enumerate(block.txs)],
        )

    def _insert(self, block: Block, expect_height: int, expect_prev: bytes) -> None:
        cur = self.db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            row = cur.execute("SELECT height, hash FROM blocks ORDER BY height DESC LIMIT 1")
            tip = row.fetchone()
            if tip is not None and (tip[0] + 1 != block.height or tip[1] != block.header.prev_hash):
                raise StoreError(f"refusing block {block.height}: does not extend tip {tip[0]}")
            if block.height != expect_height or block.header.prev_hash != expect_prev:
                raise StoreError(f"refusing block {block.height}: expected {expect_height}")
            self._insert_rows(cur, block)
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise

    # -- reads -----------------------------------------------------------------------------

    def tip(self) -> tuple[int, bytes]:
        row = self.db.execute("SELECT height, hash FROM blocks ORDER BY height DESC LIMIT 1")
        r = row.fetchone()
        if r is None:
            raise StoreError(f"store {self.path} has no genesis block")
        return int(r[0]), bytes(r[1])

    def block_at(self, height: int) -> Block | None:
        r = self.db.execute("SELECT data FROM blocks WHERE height = ?", (height,)).fetchone()
        return decode_block(r[0]) if r else None

    def block_by_hash(self, h: bytes) -> Block | None:
        r = self.db.execute("SELECT data FROM blocks WHERE hash = ?", (h,)).fetchone()
        return decode_block(r[0]) if r else None

    def raw_range(self, start: int, count: int) -> list[bytes]:
        rows = self.db.execute(
            "SELECT data FROM blocks WHERE height >= ? ORDER BY height LIMIT ?", (start, count)
        )
        return [bytes(r[0]) for r in rows]

    def iter_range(self, start: int, count: int) -> Iterator[bytes]:
        """Like raw_range, one block in memory at a time."""
        cur = self.db.execute(
            "SELECT data FROM blocks WHERE height >= ? ORDER BY height LIMIT ?", (start, count)
        )
        for row in cur:
            yield bytes(row[0])

    def hash_at(self, height: int) -> bytes | None:
        r = self.db.execute("SELECT hash FROM blocks WHERE height = ?", (height,)).fetchone()
        return bytes(r[0]) if r else None

    def has_block(self, h: bytes) -> bool:
        return self.db.execute("SELECT 1 FROM blocks WHERE hash = ?", (h,)).fetchone() is not None

    def tx_height(self, txid: bytes) -> int | None:
        r = self.db.execute("SELECT height FROM txs WHERE txid = ?", (txid,)).fetchone()
        return int(r[0]) if r else None

    def has_tx(self, txid: bytes) -> bool:
        return self.db.execute("SELECT 1 FROM txs WHERE txid = ?", (txid,)).fetchone() is not None

    def tx_count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM txs").fetchone()[0])
