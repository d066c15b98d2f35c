"""Block commits off the event loop: a writer thread owns the only write connection.

``WriteBehindStore`` is the ``Store`` the node's loop sees. A commit (``commit_block``,
``commit_blocks``, ``replace_above``) updates an in-memory overlay at once and queues the same
operation, in order, to the writer thread, which runs it as one SQLite transaction and retries
while another process holds the database locked. Reads on the loop answer from the overlay for
the heights it covers and from a read-only WAL connection below (WAL readers are never blocked
by a writer). When an operation is durable the writer tells the loop (``notify``, e.g.
``loop.call_soon_threadsafe``); only then does the overlay drop it, ``durable_tip`` move and the
callbacks of ``after_durable`` run — so "committed" in /status means on disk, and a kill -9
loses only what was never reported committed.

Why the overlay is simple: every operation writes a contiguous run of heights ending at the new
tip (an append writes tip+1, a reorg fork+1..new tip, and a reorg always lengthens the chain),
so the operation numbers grow with height and the not-yet-durable heights are always the top of
the chain: dropping the entries of the operations the writer finished leaves exactly the heights
the durable store does not hold yet (or holds an older version of).
"""

from __future__ import annotations

import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from netdiag.node.errors import StoreError
from netdiag.node.model import Block
from netdiag.node.store import Store

LOCK_RETRY_S = 0.05  # after SQLite's own busy wait gave up: try again this much later


@dataclass(frozen=True)
class WriteOp:
    seq: int
    blocks: list[Block]  # appended (fork < 0) or replacing everything above ``fork``
    fork: int = -1


@dataclass(frozen=True)
class BackfillOp:
    """History below the base (a snapshot start), prepended by the writer thread."""

    blocks: list[Block]
    done: Callable[[int | StoreError], None]


@dataclass(frozen=True)
class WriteDone:
    """What the writer reports to the loop for one durable operation."""

    op: WriteOp
    seconds: float  # queued -> durable
    lock_waits: int  # attempts refused because another connection held the lock


class WriteBehindStore(Store):
    def __init__(
        self,
        path: Path,
        notify: Callable[[Callable[[], None]], object],
        on_done: Callable[[WriteDone], None] | None = None,
        on_failed: Callable[[BaseException], None] | None = None,
        busy_timeout_s: float = 1.0,
    ) -> None:
        self._writer = Store(path)  # creates the file and schema; the writer thread's own
        self._writer.db.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        reader = Store.reader(path)
        self.path, self.db = path, reader.db  # inherited reads go to the read-only connection
        self.notify = notify
        self.on_done = on_done
        self.on_failed = on_failed
        self._overlay: dict[int, tuple[Block, int]] = {}  # height -> (block, op seq)
        self._heights: dict[bytes, int] = {}  # block hash -> height, overlay blocks
        self._tx_heights: dict[bytes, int] = {}  # txid -> height, overlay blocks
        self._tip: tuple[int, bytes] = (-1, b"")
        self._durable: Block | None = None
        self._seq = 0
        self._after: list[tuple[int, Callable[[], None]]] = []
        self._queue: queue.SimpleQueue[tuple[WriteOp | BackfillOp, float] | None] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None
        self.failed: BaseException | None = None
        self._side: Store | None = None  # install_base / backfill (snapshot starts)

    # -- start-up (before any queued write, on the calling thread) -------------------------

    def init_genesis(self, genesis: Block) -> None:
        self._writer.init_genesis(genesis)

    def verify(self, depth: int = 64) -> int:
        """At start: check the store and take its tip. Later: check what is on disk now,
        through a reader of its own (the write connection is the writer thread's)."""
        if self._thread is not None:
            reader = Store.reader(self.path)
            try:
                return reader.verify(depth)
            finally:
                reader.close()
        tip = self._writer.verify(depth)
        self._tip = self._writer.tip()
        self._durable = self._writer.block_at(tip)
        return tip

    # -- a snapshot start (onboard.py): rare, on a connection of their own -----------------

    def install_base(self, block: Block) -> None:
        """Synchronous: only on a fresh store (nothing queued), before the chain moves on."""
        self._own().install_base(block)
        self._base = block.height
        self._tip = (block.height, block.hash)
        self._durable = block

    def backfill(self, blocks: list[Block]) -> int:
        """Below the base, so never in the overlay; SQLite's lock orders it with the writer.
        Synchronous (offline tools); the node uses ``backfill_later``."""
        self._base = self._own().backfill(blocks)
        return self._base

    def backfill_later(self, blocks: list[Block], done: Callable[[int | StoreError], None]) -> None:
        """On the writer thread, in order with the commits (the loop goes on); ``done`` on
        the loop with the new base (``base_height`` moves then) or why it was refused."""
        self._start_writer()
        self._queue.put((BackfillOp(list(blocks), done), time.perf_counter()))

    def _own(self) -> Store:
        if self._side is None:
            self._side = Store(self.path)
            self._side.db.execute("PRAGMA busy_timeout=5000")
        return self._side

    # -- state the loop reads --------------------------------------------------------------

    @property
    def pending_blocks(self) -> int:
        return len(self._overlay)

    def durable_tip(self) -> Block | None:
        return self._durable

    def after_durable(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the loop once everything queued so far is on disk."""
        if self._seq == 0 or not self._overlay:
            fn()
        else:
            self._after.append((self._seq, fn))

    # -- writes: overlay now, the writer thread in order -----------------------------------

    def commit_block(self, block: Block) -> None:
        self.commit_blocks([block])

    def commit_blocks(self, blocks: list[Block]) -> None:
        height, prev = self._tip
        for b in blocks:
            if b.height != height + 1 or b.header.prev_hash != prev:
                raise StoreError(f"refusing block {b.height}: does not extend tip {height}")
            height, prev = b.height, b.hash
        if blocks:
            self._queue_op(blocks, -1)

    def replace_above(self, fork_height: int, branch: list[Block]) -> list[Block]:
        base = self.hash_at(fork_height)
        if base is None or not branch or branch[0].header.prev_hash != base:
            raise StoreError(f"refusing reorg: branch does not attach at {fork_height}")
        for i, b in enumerate(branch):
            prev = branch[i - 1].hash if i else base
            if b.height != fork_height + 1 + i or b.header.prev_hash != prev:
                raise StoreError(f"refusing reorg: branch block {b.height} does not link")
        dropped = [self.block_at(h) for h in range(fork_height + 1, self._tip[0] + 1)]
        for h in range(fork_height + 1, self._tip[0] + 1):
            self._forget(h)
        self._queue_op(branch, fork_height)
        return [b for b in dropped if b is not None]

    def _queue_op(self, blocks: list[Block], fork: int) -> None:
        self._seq += 1
        op = WriteOp(self._seq, list(blocks), fork)
        for b in blocks:
            self._forget(b.height)
            self._overlay[b.height] = (b, op.seq)
            self._heights[b.hash] = b.height
            for tx in b.txs:
                self._tx_heights[tx.txid()] = b.height
        self._tip = (blocks[-1].height, blocks[-1].hash)
        self._start_writer()
        self._queue.put((op, time.perf_counter()))

    def _start_writer(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="node-store", daemon=True)
            self._thread.start()

    def _forget(self, height: int) -> None:
        old = self._overlay.pop(height, None)
        if old is None:
            return
        self._heights.pop(old[0].hash, None)
        for tx in old[0].txs:
            if self._tx_heights.get(tx.txid()) == height:
                del self._tx_heights[tx.txid()]

    # -- the writer thread -----------------------------------------------------------------

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            op, queued_at = item
            if isinstance(op, BackfillOp):
                self._backfill_now(op)
                continue
            waits = 0
            while True:
                try:
                    if op.fork < 0:
                        self._writer.commit_blocks(op.blocks)
                    else:
                        self._writer.replace_above(op.fork, op.blocks)
                    break
                except sqlite3.OperationalError as e:
                    if "locked" not in str(e) and "busy" not in str(e):
                        self._fail(e)
                        return
                    waits += 1  # another connection holds the write lock: wait, in order
                    time.sleep(LOCK_RETRY_S)
                except Exception as e:
                    self._fail(e)
                    return
            done = WriteDone(op, time.perf_counter() - queued_at, waits)
            self.notify(lambda done=done: self._durable_now(done))  # type: ignore[misc]

    def _backfill_now(self, op: BackfillOp) -> None:
        """On the writer thread. A refused batch (it does not link, the disk failed) is
        reported to its caller, not a store failure: the blocks above are untouched."""
        out: int | StoreError
        while True:
            try:
                vars(self._writer).pop("_base", None)  # install_base ran on another connection
                out = self._writer.backfill(op.blocks)
                break
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) and "busy" not in str(e):
                    out = StoreError(f"backfill not written: {e}")
                    break
                time.sleep(LOCK_RETRY_S)
            except StoreError as e:
                out = e
                break
            except Exception as e:
                out = StoreError(f"backfill not written: {e!r}")
                break

        def back_on_loop() -> None:
            if isinstance(out, int):
                self._base = out
            op.done(out)

        self.notify(back_on_loop)

    def _fail(self, e: BaseException) -> None:
        """The durable store refused what the overlay holds: they disagree, stop writing."""

        def report() -> None:
            self.failed = e
            if self.on_failed is not None:
                self.on_failed(e)

        self.notify(report)

    # -- back on the loop ------------------------------------------------------------------

    def _durable_now(self, done: WriteDone) -> None:
        seq = done.op.seq
        for h in [h for h, (_, s) in self._overlay.items() if s <= seq]:
            self._forget(h)
        self._durable = done.op.blocks[-1]
        ready = [fn for s, fn in self._after if s <= seq]
        self._after = [(s, fn) for s, fn in self._after if s > seq]
        if self.on_done is not None:
            self.on_done(done)
        for fn in ready:
            fn()

    def close(self, timeout_s: float = 10.0) -> None:
        """Let the writer finish what is queued (bounded: a database locked for good loses
        the blocks never reported durable), then close both connections."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout_s)
        if self._thread is None or not self._thread.is_alive():
            self._writer.close()
        if self._side is not None:
            self._side.close()
        self.db.close()

    # -- reads: the overlay above, the durable store below ---------------------------------

    def tip(self) -> tuple[int, bytes]:
        return self._tip

    def _overlay_block(self, height: int) -> Block | None:
        got = self._overlay.get(height)
        return got[0] if got is not None else None

    def _below_overlay(self, height: int | None) -> bool:
        """Is a durable row at ``height`` still part of our chain?"""
        return height is not None and height <= self._tip[0] and height not in self._overlay

    def block_at(self, height: int) -> Block | None:
        b = self._overlay_block(height)
        if b is not None or height > self._tip[0]:
            return b
        return super().block_at(height)

    def hash_at(self, height: int) -> bytes | None:
        b = self._overlay_block(height)
        if b is not None or height > self._tip[0]:
            return b.hash if b is not None else None
        return super().hash_at(height)

    def block_by_hash(self, h: bytes) -> Block | None:
        if h in self._heights:
            return self._overlay_block(self._heights[h])
        b = super().block_by_hash(h)
        return b if b is not None and self._below_overlay(b.height) else None

    def has_block(self, h: bytes) -> bool:
        if h in self._heights:
            return True
        r = self.db.execute("SELECT height FROM blocks WHERE hash = ?", (h,)).fetchone()
        return r is not None and self._below_overlay(int(r[0]))

    def tx_height(self, txid: bytes) -> int | None:
        if txid in self._tx_heights:
            return self._tx_heights[txid]
        h = super().tx_height(txid)
        return h if self._below_overlay(h) else None

    def has_tx(self, txid: bytes) -> bool:
        return self.tx_height(txid) is not None

    def raw_range(self, start: int, count: int) -> list[bytes]:
        return list(self.iter_range(start, count))

    def iter_range(self, start: int, count: int) -> Iterator[bytes]:
        end = min(start + count, self._tip[0] + 1)
        base = min(self._overlay, default=end)
        if start < base:
            yield from super().iter_range(start, min(end, base) - start)
        for h in range(max(start, base), end):
            yield self._overlay[h][0].encode()

    def tx_count(self) -> int:
        """Durable transactions (the overlay's are not counted until they are on disk)."""
        return super().tx_count()
