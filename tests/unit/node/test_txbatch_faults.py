"""The tx micro-batching when something breaks (txbatch.py, sigpool.py, blockrun.py): a dead
verify worker, a tx whose check raises, a gossip flood past the bound, a bench tx that fails —
none of them may stop the intake or leave a caller waiting."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pytest

from netdiag.node import sigpool, testkit
from netdiag.node.blockrun import BlockRun
from netdiag.node.crypto import Identity
from netdiag.node.messages import TOPIC_TXS, Publish
from netdiag.node.model import Tx, decode_tx, make_tx
from netdiag.node.sigpool import SigCheck, SigPool
from tests.unit.node.test_txbatch import (
    HeldProver,
    applier,
    batcher,
    check,
    forged,
    held_node,
    make_txs,
)


def bench_workload(bad: int | None = None) -> testkit.Workload:
    w = testkit.build_workload(1, 12)
    if bad is None:
        return w
    txs = list(w.txs)
    txs[bad] = forged(decode_tx(txs[bad])).encode()
    return testkit.Workload(w.blocks, txs, w.genesis_hash, w.params, w.validators, w.network_id)


def test_a_prover_that_raises_leaves_its_batch_inline_and_the_intake_open() -> None:
    """A broken pool's submit raising inside prove_later: the batch is applied inline, in
    order, and nothing stays pending (else after max_pending txs every tx is refused)."""

    def broken(_items: list[SigCheck], _done: Callable[[list[SigCheck]], None]) -> bool:
        raise BrokenProcessPool("a worker died")

    errors: list[Exception] = []
    b, sched = batcher(HeldProver(), max_pending=40)
    b.prove_later, b.on_error = broken, errors.append
    log: list[tuple[int, str]] = []
    for t in make_txs(40, bad={5}):
        assert b.offer(check(t), 100, applier(t, log))
    sched.run_due()
    assert [n for n, _ in log] == list(range(40)) and dict(log)[5] == "tx_signature"
    assert b.pending == 0 and b.pending_bytes == 0 and b.batches == 0
    assert len(errors) == 1 and isinstance(errors[0], BrokenProcessPool)
    assert b.offer(check(make_txs(1)[0]), 100, lambda: None)  # still taking txs


class BrokenPool:
    """A ProcessPoolExecutor after a worker died: every submit raises."""

    def __init__(self) -> None:
        self.shut = False

    def submit(self, *_a: Any) -> Any:
        raise BrokenProcessPool("a worker died")

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        self.shut = True


def broken_sigpool() -> tuple[SigPool, BrokenPool, list[int]]:
    sp = SigPool(workers=2, min_batch=8)
    dead = BrokenPool()
    sp._pool = dead  # type: ignore[assignment]
    starts: list[int] = []
    sp.start = lambda: starts.append(1)  # type: ignore[method-assign]
    return sp, dead, starts


def test_prove_later_on_a_broken_pool_declines_and_restarts_the_pool() -> None:
    sp, dead, starts = broken_sigpool()
    items = [check(t) for t in make_txs(20)]
    answers: list[list[SigCheck]] = []

    async def go() -> bool:
        sent = sp.prove_later(items, answers.append)
        await asyncio.sleep(0)  # start_soon's executor call
        return sent

    assert asyncio.run(go()) is False and answers == []
    assert sp._pool is None and dead.shut and sp.restarts == 1
    assert starts  # a new pool is being started (start_soon)


def test_verify_soon_on_a_broken_pool_verifies_inline() -> None:
    sp, dead, _ = broken_sigpool()
    txs = make_txs(20, bad={3})
    oks = sp.verify_many([check(t) for t in txs])
    assert oks == [i != 3 for i in range(20)]
    assert sp._pool is None and dead.shut


class DyingPool(BrokenPool):
    """A pool that takes the batch, then loses a worker while it is in flight: every
    future ends with BrokenProcessPool."""

    def submit(self, *_a: Any) -> Any:
        fut: concurrent.futures.Future[bytes] = concurrent.futures.Future()
        fut.set_exception(BrokenProcessPool("a worker died mid-batch"))
        return fut


def test_a_worker_dying_mid_batch_leaves_the_verdicts_inline_and_the_pool_dropped() -> None:
    """A block's (or a batch's) signatures in flight when a worker dies: the waiter answers
    from an inline check instead of raising into the block's ingest, and the pool is dropped
    so the next batch starts a new one."""
    sp = SigPool(workers=2, min_batch=8)
    dying = DyingPool()
    sp._pool = dying  # type: ignore[assignment]
    sp.start = lambda: None  # type: ignore[method-assign]
    txs = make_txs(20, bad={3})
    oks = sp.verify_soon([check(t) for t in txs], share=False)()
    assert oks == [i != 3 for i in range(20)]
    assert sp._pool is None and dying.shut and sp.restarts == 1
    sp._pool = DyingPool()  # type: ignore[assignment]
    proven = sp.prove_soon([check(t) for t in txs])()
    assert proven == [check(t) for i, t in enumerate(txs) if i != 3]


def test_a_block_not_sent_ahead_for_a_broken_pool_is_left_for_its_turn() -> None:
    class Sigs:
        def prove_soon(self, *_a: Any) -> Any:
            raise BrokenProcessPool("a worker died")

    raw = bench_workload().blocks[0]
    run = BlockRun(Sigs())  # type: ignore[arg-type]
    run.send_ahead(raw)  # must not raise into block N's turn
    assert run.decoded(raw) is None


def test_an_api_tx_whose_check_raises_in_a_batch_is_answered_at_once(tmp_path: Path) -> None:
    """Behind waiting gossip txs, an API tx whose check raises is answered "error" when its
    batch applies (the API says 500 then, not after TX_WAIT_S), and the txs after it in the
    batch are still decided."""
    world, core, prover = held_node(tmp_path)
    sender = world.attach(core, host="10.9.9.1")
    key, other = Identity.generate(), Identity.generate()
    now = world.clock.wall_ms()
    for t in [make_tx(key, i, b"g", now) for i in range(70)]:
        sender.receive(Publish(TOPIC_TXS, t.encode()), len(t.encode()))
    world.sched.run_due()
    assert len(prover.batches) == 1
    boom, fine = make_tx(other, 0, b"boom", now), make_tx(other, 1, b"ok", now)
    real = core.ingest.accept_tx

    def accept_tx(tx: Tx, *a: Any) -> str:
        if tx.txid() == boom.txid():
            raise RuntimeError("a bug")
        return real(tx, *a)

    core.ingest.accept_tx = accept_tx  # type: ignore[method-assign]
    answers: list[tuple[str, bytes]] = []
    for t in (boom, fine):
        core.ingest.submit_local_tx_later(t, lambda v, txid: answers.append((v, txid)))
    world.sched.run_due()
    assert answers == []
    prover.answer(0)
    world.sched.run_due()
    assert answers == [("error", boom.txid()), ("accept", fine.txid())]
    assert [e for e in world.events("n", "internal_error")]


def test_a_tx_refused_for_room_is_taken_from_a_later_copy(tmp_path: Path) -> None:
    """A gossiped tx the full batch refused is forgotten by the seen cache: the honest copy
    that arrives after the flood is taken, not dropped as a duplicate."""
    world, core, _ = held_node(tmp_path)
    b = core.ingest.txs.batcher
    b.max_pending = 20
    flooder = world.attach(core, host="10.9.9.1")
    honest = world.attach(core, host="10.9.9.2")
    key = Identity.generate()
    now = world.clock.wall_ms()
    txs = [make_tx(key, i, b"f", now) for i in range(21)]
    core.ingest.txs.per_peer = 1000
    for t in txs[:20]:
        flooder.receive(Publish(TOPIC_TXS, t.encode()), len(t.encode()))
    late = txs[20].encode()
    flooder.receive(Publish(TOPIC_TXS, late), len(late))  # no room: refused
    assert b.pending == 20 and b.refused == 1
    world.sched.run_due()  # under min_batch: applied inline
    assert b.pending == 0 and txs[20].txid() not in core.mempool
    honest.receive(Publish(TOPIC_TXS, late), len(late))  # the honest copy, later
    world.sched.run_due()
    assert txs[20].txid() in core.mempool


def test_one_peer_cannot_fill_the_shared_bound(tmp_path: Path) -> None:
    """A connection may have a quarter of max_pending gossip txs waiting: past that its txs
    are refused (counted as the tx_batch limit) while another peer's are still taken."""
    world, core, prover = held_node(tmp_path)
    b = core.ingest.txs.batcher
    b.max_pending, b.min_batch = 100, 8
    flooder = world.attach(core, host="10.9.9.1")
    honest = world.attach(core, host="10.9.9.2")
    now = world.clock.wall_ms()
    flood = [make_tx(Identity.generate(), 0, b"f", now) for _ in range(60)]
    for t in flood:
        flooder.receive(Publish(TOPIC_TXS, t.encode()), len(t.encode()))
    assert b.pending == 25 and b.refused == 0  # the intake refused 35: none reached offer
    assert core.metrics.limit_hits.labels("tx_batch")._value.get() == 35
    mine = [make_tx(Identity.generate(), 0, b"h", now) for _ in range(10)]
    for t in mine:
        honest.receive(Publish(TOPIC_TXS, t.encode()), len(t.encode()))
    assert b.pending == 35
    world.sched.run_due()
    prover.answer(0)
    world.sched.run_due()
    assert all(t.txid() in core.mempool for t in mine)
    assert core.ingest.txs.by_peer == {}  # every waiting count went back to zero
    for t in flood[25:35]:  # room again for the flooder
        flooder.receive(Publish(TOPIC_TXS, t.encode()), len(t.encode()))
    assert b.pending == 10


def test_the_bench_tx_batch_rate_raises_when_a_check_fails() -> None:
    with pytest.raises(RuntimeError, match="failed their check"):
        testkit.tx_batch_wall_rate(bench_workload(bad=4), SigPool(workers=0))
    assert testkit.tx_batch_wall_rate(bench_workload(), SigPool(workers=0)) > 0


def test_the_bench_tx_batch_rate_raises_past_its_deadline() -> None:
    class Silent:  # a pool that never answers
        min_batch = 1

        def prove_later(self, _items: list[SigCheck], _done: Any) -> bool:
            return True

    with pytest.raises(RuntimeError, match="deadline"):
        testkit.tx_batch_wall_rate(bench_workload(), Silent(), deadline_s=0.0)  # type: ignore[arg-type]


class MidDyingPool(BrokenPool):
    """Chunk 0 answered by a worker (whose verifier refuses check 1: stricter than the
    node's rule, as sodium's may be), chunk 1 lost with the worker, the rest not started."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def submit(self, fn: Callable[[bytes], bytes], buf: bytes) -> Any:
        fut: concurrent.futures.Future[bytes] = concurrent.futures.Future()
        if self.n == 0:
            res = bytearray(fn(buf))
            res[1] = 0
            fut.set_result(bytes(res))
        elif self.n == 1:
            fut.set_exception(BrokenProcessPool("a worker died mid-batch"))
        self.n += 1
        return fut


def test_a_worker_dying_mid_batch_rechecks_only_the_chunks_left_unanswered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only the lost chunk is verified inline again: the worker's answered chunk and the
    chunks the caller verified itself keep their verdicts, as in a batch with no death."""
    inline: list[list[SigCheck]] = []
    real = sigpool.verify_chunk

    def verify_chunk(items: list[SigCheck]) -> list[bool]:
        inline.append(items)
        return real(items)

    monkeypatch.setattr(sigpool, "verify_chunk", verify_chunk)
    sp = SigPool(workers=2, min_batch=8)
    pool = MidDyingPool()
    sp._pool = pool  # type: ignore[assignment]
    sp.start = lambda: None  # type: ignore[method-assign]
    items = [check(t) for t in make_txs(40, bad={13, 25})]
    oks = sp.verify_soon(items, share=True, chunk=10)()
    assert inline == [items[10:20]]  # chunk 1 only: 2 and 3 were the caller's
    assert oks == [i not in (1, 13, 25) for i in range(40)]  # 1: the worker's verdict kept
    assert sp._pool is None and pool.shut and sp.restarts == 1
