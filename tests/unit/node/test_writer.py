"""The write-behind store (writer.py): while another connection holds the database locked, the
chain goes on in memory and every read answers as a plain store that committed synchronously
would; once the lock goes, the writer brings the disk to exactly that chain, in order."""

from __future__ import annotations

import queue
import sqlite3
from collections.abc import Callable
from pathlib import Path

from netdiag.node.chain import Chain
from netdiag.node.store import Store
from netdiag.node.writer import WriteBehindStore, WriteDone
from tests.unit.node.chainkit import Clock, branch, extend, lab, open_chain, txs


def reads(store: Store, top: int, probe_txids: list[bytes]) -> list[object]:
    out: list[object] = [store.tip()]
    for h in range(top + 3):
        b = store.block_at(h)
        out += [h, store.hash_at(h), b.hash if b else None]
        if b is not None:
            found = store.block_by_hash(b.hash)
            out += [store.has_block(b.hash), found.height if found else None]
    out += [[store.tx_height(t) for t in probe_txids], [store.has_tx(t) for t in probe_txids]]
    out += [store.raw_range(0, top + 3), list(store.iter_range(2, 4))]
    return out


def test_reads_match_a_synchronous_store_while_the_disk_is_locked(tmp_path: Path) -> None:
    spec, keys = lab(validators=3, epoch=4)
    acks: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
    done: list[WriteDone] = []
    clock_a, clock_b = Clock(), Clock()
    wb = WriteBehindStore(tmp_path / "a" / "chain.sqlite", acks.put, on_done=done.append)
    a = Chain(wb, spec, clock_ms=clock_a)
    b = open_chain(tmp_path / "b", spec, clock_b)
    extend(a, keys, clock_a, 3)
    extend(b, keys, clock_b, 3)
    while len(done) < 3:
        acks.get()()
    assert wb.pending_blocks == 0 and wb.durable_tip() == a.tip

    lock = sqlite3.connect(tmp_path / "a" / "chain.sqlite", isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    try:
        our_txs = txs(5, keys[0])
        for chain, clock in ((a, clock_a), (b, clock_b)):
            extend(chain, keys, clock, 2)
            blk = branch(chain, keys, chain.height, 1, txs_at={chain.height + 1: our_txs})[0]
            clock.ms = blk.header.timestamp_ms
            assert chain.submit(blk).error is None
            extend(chain, keys, clock, 2)
            # a reorg reaching below the blocks still in memory: some on disk, some not
            theirs = branch(chain, keys, chain.height - 4, 6, round_=2)
            clock.ms = theirs[-1].header.timestamp_ms
            res = chain.reorg(theirs, max_depth=64)
            assert res.error is None and res.adopted
        assert a.tip == b.tip
        durable = wb.durable_tip()
        assert durable is not None and durable.height == 3, "nothing reached the locked disk"
        assert wb.pending_blocks == a.height - 3
        probe = [t.txid() for t in our_txs] + [t.txid() for x in theirs for t in x.txs]
        assert reads(a.store, a.height, probe) == reads(b.store, b.height, probe)
        assert a.store.has_tx(our_txs[0].txid()) is b.store.has_tx(our_txs[0].txid())
        assert acks.empty()
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    while wb.pending_blocks:
        acks.get()()
    durable = wb.durable_tip()
    assert durable is not None and durable.hash == a.tip_hash
    wb.close()
    b.store.close()
    on_disk = open_chain(tmp_path / "a", spec, Clock())
    assert on_disk.store.verify(depth=on_disk.height + 1) == a.height
    plain = open_chain(tmp_path / "b", spec, Clock())
    assert reads(on_disk.store, a.height, probe) == reads(plain.store, a.height, probe)
    assert on_disk.store.tx_count() == plain.store.tx_count()
    on_disk.store.close()
    plain.store.close()


def test_after_durable_waits_for_the_writer(tmp_path: Path) -> None:
    spec, keys = lab(validators=3, epoch=4)
    acks: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
    wb = WriteBehindStore(tmp_path / "chain.sqlite", acks.put)
    clock = Clock()
    chain = Chain(wb, spec, clock_ms=clock)
    ran: list[int] = []
    wb.after_durable(lambda: ran.append(0))
    assert ran == [0], "nothing queued: at once"
    extend(chain, keys, clock, 2)
    wb.after_durable(lambda: ran.append(2))
    assert ran == [0]
    while wb.pending_blocks:
        acks.get()()
    assert ran == [0, 2]
    wb.close()


def test_backfill_runs_on_the_writer_thread_and_reports_back(tmp_path: Path) -> None:
    """A snapshot start's history below the base goes to the writer thread: the caller's
    loop is not held (the base moves only when the loop runs the answer), it waits out
    another connection's lock like a commit, and a batch that does not link is refused
    (StoreError to the caller) with nothing written."""
    from netdiag.node.errors import StoreError

    spec, keys = lab(validators=3, epoch=4)
    clock = Clock()
    src = open_chain(tmp_path / "src", spec, clock)
    blocks = extend(src, keys, clock, 12)
    acks: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
    wb = WriteBehindStore(tmp_path / "j" / "chain.sqlite", acks.put)
    wb.init_genesis(spec.block())
    wb.install_base(blocks[-1])
    assert wb.base_height() == 12
    got: list[int | StoreError] = []
    lock = sqlite3.connect(tmp_path / "j" / "chain.sqlite", isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    wb.backfill_later(blocks[5:11], got.append)  # heights 6..11, right below the base
    assert acks.empty() and wb.base_height() == 12, "waits for the lock, off the caller"
    lock.execute("ROLLBACK")
    acks.get(timeout=10)()
    assert got == [6] and wb.base_height() == 6
    wb.backfill_later(blocks[0:4], got.append)  # 1..4: does not end right below 6
    acks.get(timeout=10)()
    assert isinstance(got[-1], StoreError) and wb.base_height() == 6
    wb.backfill_later(blocks[0:5], got.append)
    acks.get(timeout=10)()
    assert got[-1] == 0 and wb.base_height() == 0
    assert [wb.hash_at(h) for h in range(1, 13)] == [b.hash for b in blocks]
    wb.close()
