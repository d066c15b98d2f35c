"""Transactions in micro-batches (txbatch.py): their signatures go to the pool together, yet
each is decided exactly as alone — a forged one in a batch is refused (and its sender
penalized, its API client told) while the others are accepted, in arrival order; the waiting
batch is bounded."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

from netdiag.node import crypto
from netdiag.node.api import start_api, stop_api, tx_json
from netdiag.node.apithread import ThreadedView
from netdiag.node.core import NodeCore
from netdiag.node.crypto import Identity
from netdiag.node.errors import ValidationError
from netdiag.node.genesis import ChainParams
from netdiag.node.messages import TOPIC_TXS, Publish
from netdiag.node.model import Tx, make_tx
from netdiag.node.policy import PENALTY_INVALID
from netdiag.node.runtime import LoopScheduler, ManualClock, ManualScheduler
from netdiag.node.sigpool import SigCheck, SigPool
from netdiag.node.txbatch import TxBatcher
from netdiag.node.validation import check_tx
from tests.unit.node.corekit import World, lab
from tests.unit.node.test_api_hardening import FakeView, post, request

Done = Callable[[list[SigCheck]], None]
Log = list[tuple[int, str]]


def forged(tx: Tx) -> Tx:
    sig = bytes([tx.signature[0] ^ 1]) + tx.signature[1:]
    return Tx(tx.sender, tx.nonce, tx.timestamp_ms, tx.payload, sig, tx.to, tx.amount)


def check(tx: Tx) -> SigCheck:
    return tx.sender, tx.signature, tx.signing_bytes()


class HeldProver:
    """A pool whose batches wait until the test answers them: ``answer(i)`` proves what the
    node's rule verifies in batch ``i`` (a forgery is left out, as a real pool leaves it)."""

    def __init__(self) -> None:
        self.batches: list[tuple[list[SigCheck], Done]] = []

    def __call__(self, items: list[SigCheck], done: Done) -> bool:
        self.batches.append((list(items), done))
        return True

    def answer(self, i: int) -> None:
        items, done = self.batches[i]
        done([it for it in items if crypto.verify_raw(*it)])


def make_txs(n: int, bad: set[int] = frozenset()) -> list[Tx]:  # type: ignore[assignment]
    key = Identity.generate()
    out = [make_tx(key, i, b"p%d" % i, 0) for i in range(n)]
    return [forged(t) if i in bad else t for i, t in enumerate(out)]


def batcher(prover: HeldProver, **kw: int) -> tuple[TxBatcher, ManualScheduler]:
    sched = ManualScheduler(ManualClock())
    return TxBatcher(prover, sched, min_batch=8, **kw), sched


def applier(tx: Tx, log: list[tuple[int, str]]) -> Callable[[], None]:
    def apply() -> None:
        try:
            check_tx(tx, ChainParams())
            log.append((tx.nonce, "ok"))
        except ValidationError as e:
            log.append((tx.nonce, e.reason))

    return apply


def held_node(tmp_path: Path) -> tuple[World, NodeCore, HeldProver]:
    """A non-producing node of a 3-validator lab whose tx batches wait for ``prover``."""
    spec, _ = lab(3)
    world = World(tmp_path, spec)
    core = world.node("n", produce=False)
    prover = HeldProver()
    core.ingest.txs.batcher.prove_later = prover
    return world, core, prover


def test_a_forged_tx_in_a_batch_is_refused_alone_and_order_is_kept() -> None:
    prover = HeldProver()
    b, sched = batcher(prover)
    txs = make_txs(40, bad={13})
    log: list[tuple[int, str]] = []
    for t in txs:
        assert b.offer(check(t), 100, applier(t, log))
    sched.run_due()
    assert len(prover.batches) == 1 and len(prover.batches[0][0]) == 40
    assert log == []  # nothing applied before its batch is back
    prover.answer(0)
    assert [n for n, _ in log] == list(range(40))
    assert [n for n, why in log if why != "ok"] == [13]
    assert dict(log)[13] == "tx_signature"
    assert b.pending == 0 and b.pending_bytes == 0


def two_turns(n: int, max_inflight: int) -> tuple[HeldProver, ManualScheduler, list[Tx], Log]:
    """``n`` txs offered in two loop turns, 10 then the rest, to a held prover."""
    prover = HeldProver()
    b, sched = batcher(prover, max_inflight=max_inflight)
    txs = make_txs(n)
    log: Log = []
    for turn in (txs[:10], txs[10:]):
        for t in turn:
            b.offer(check(t), 100, applier(t, log))
        sched.run_due()
    return prover, sched, txs, log


def test_batches_answered_out_of_order_apply_in_arrival_order() -> None:
    prover, _, _, log = two_turns(30, max_inflight=2)
    assert len(prover.batches) == 2  # the second went while the first was in flight
    prover.answer(1)
    assert log == []  # its predecessor is still at the pool
    prover.answer(0)
    assert [n for n, _ in log] == list(range(30)) and all(w == "ok" for _, w in log)


def test_what_arrives_while_batches_are_in_flight_waits_for_a_slot() -> None:
    prover, sched, _, log = two_turns(25, max_inflight=1)
    assert len(prover.batches) == 1  # collecting behind the one in flight
    prover.answer(0)
    sched.run_due()
    assert len(prover.batches) == 2 and len(prover.batches[1][0]) == 15
    prover.answer(1)
    assert [n for n, _ in log] == list(range(25))


def test_the_pending_batch_is_bounded() -> None:
    prover = HeldProver()
    b, sched = batcher(prover, max_pending=20, max_pending_bytes=10_000)
    txs = make_txs(30)
    log: list[tuple[int, str]] = []
    took = [b.offer(check(t), 100, applier(t, log)) for t in txs]
    assert took == [True] * 20 + [False] * 10 and b.refused == 10
    sched.run_due()
    prover.answer(0)
    assert b.pending == 0 and b.offer(check(txs[20]), 100, applier(txs[20], log))
    big, _ = batcher(HeldProver(), max_pending=100, max_pending_bytes=1000)
    assert [big.offer(check(t), 400, lambda: None) for t in txs[:3]] == [True, True, False]


def test_a_small_batch_with_nothing_in_flight_is_applied_inline_on_the_next_turn() -> None:
    prover = HeldProver()
    b, sched = batcher(prover)
    txs = make_txs(3, bad={1})
    log: list[tuple[int, str]] = []
    for t in txs:
        b.offer(check(t), 100, applier(t, log))
    assert log == []  # not within offer: on the loop's next turn (call_soon)
    sched.run_due()
    assert prover.batches == [] and log == [(0, "ok"), (1, "tx_signature"), (2, "ok")]


def test_with_the_real_pool_only_the_forged_signature_is_refused(pool: SigPool) -> None:
    txs = make_txs(120, bad={0, 77})
    log: list[tuple[int, str]] = []

    pool.start()  # the fixture's (no-op if up): workers up before the batch is offered, else
    assert pool.worker_pids(), pool.error  # prove_later declines, all inline, batches stays 0

    async def go() -> None:
        b = TxBatcher(pool.prove_later, LoopScheduler(), pool.min_batch)
        for t in txs:
            assert b.offer(check(t), 100, applier(t, log))
        while len(log) < len(txs):
            await asyncio.sleep(0.01)
        assert b.batches >= 1

    asyncio.run(asyncio.wait_for(go(), 60))
    assert [n for n, _ in log] == list(range(120))
    assert [n for n, why in log if why != "ok"] == [0, 77]


def test_gossip_and_api_batches_refuse_the_forgery_as_before(tmp_path: Path) -> None:
    """On the node core: a gossiped batch with one forged tx penalizes its sender for that tx
    only, keeps the rest and forwards only them; an API submission with a forged signature is
    answered reject, its valid twin accept — at once when nothing waits, else behind the
    waiting gossip txs, in order."""
    world, core, prover = held_node(tmp_path)
    sender = world.attach(core, host="10.9.9.1")
    listener = world.attach(core, host="10.9.9.2")
    key = Identity.generate()
    now = world.clock.wall_ms()
    txs = [make_tx(key, i, b"x", now) for i in range(80)]
    txs[41] = forged(txs[41])
    for t in txs:
        data = t.encode()
        sender.receive(Publish(TOPIC_TXS, data), len(data))
    world.sched.run_due()
    assert len(prover.batches) == 1 and len(core.mempool) == 0
    prover.answer(0)
    world.sched.run_due()
    assert len(core.mempool) == 79 and txs[41].txid() not in core.mempool
    rejected = world.events("n", "tx_rejected")
    assert [e["reason"] for e in rejected] == ["tx_signature"]
    assert rejected[0]["peer"] == sender.peer_id.hex()
    assert core.scores.peer_score(sender.peer_id) == -PENALTY_INVALID  # once, for the one tx
    assert core.scores.peer_score(listener.peer_id) == 0
    relayed = [m for m in listener.sent if isinstance(m, Publish) and m.topic == TOPIC_TXS]
    assert forged_not_in(relayed, txs[41]) and len(relayed) >= 1

    answers: list[tuple[str, bytes]] = []
    other = Identity.generate()
    lone = forged(make_tx(other, 0, b"lone", now))
    core.ingest.submit_local_tx_later(lone, lambda v, txid: answers.append((v, txid)))
    assert answers == [("reject", lone.txid())]  # nothing waiting: checked at once, as before
    answers.clear()
    flood = [make_tx(key, i, b"y", now) for i in range(80, 150)]  # a gossip batch in flight
    for t in flood:
        data = t.encode()
        sender.receive(Publish(TOPIC_TXS, data), len(data))
    world.sched.run_due()
    assert len(prover.batches) == 2
    good = make_tx(other, 1, b"api", now)
    bad = forged(make_tx(other, 2, b"api", now))
    for t in (bad, good):  # join behind the waiting gossip txs
        core.ingest.submit_local_tx_later(t, lambda v, txid: answers.append((v, txid)))
    world.sched.run_due()
    assert answers == []
    prover.answer(1)
    world.sched.run_due()
    assert len(prover.batches) == 2  # under min_batch, nothing in flight: inline
    assert answers == [("reject", bad.txid()), ("accept", good.txid())]
    assert flood[-1].txid() in core.mempool


def forged_not_in(relayed: list[Publish], tx: Tx) -> bool:
    return all(m.data != tx.encode() for m in relayed)


class LaterView(FakeView):
    """What ThreadedView calls on the node loop: the verdict comes back a few turns later,
    as from a signature batch."""

    def __init__(self, verdict: str) -> None:
        super().__init__()
        self.verdict = verdict

    def submit_local_tx_later(self, tx: Tx, done: Callable[[str, bytes], None]) -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(0.01, lambda: done(self.verdict, tx.txid()))


async def test_the_api_answers_once_the_batch_is_back(tmp_path: Path) -> None:
    """POST /tx through the API thread's view waits for the batch's verdict: a forged
    signature is 400 invalid as before, accept 202, and a full batch 503 busy."""
    tx = make_tx(Identity.generate(), 1, b"hi", 1)
    body = json.dumps(tx_json(tx)).encode()
    for verdict, status_want, reason in (
        ("reject", 400, "invalid"),
        ("accept", 202, None),
        ("busy", 503, "busy"),
    ):
        view = ThreadedView(LaterView(verdict), asyncio.get_running_loop(), tmp_path / "x")
        runner, port = await start_api(view, "127.0.0.1:0")  # type: ignore[arg-type]
        try:
            status, answer = await request(port, post(body))
        finally:
            await stop_api(runner)
        assert status == status_want, answer
        if reason is not None:
            assert json.loads(answer)["reason"] == reason


def test_a_gossip_flood_past_the_bound_is_dropped_unforwarded_and_counted(
    tmp_path: Path,
) -> None:
    """The batch holds at most max_pending txs: the rest of a flood is ignored (no penalty:
    valid txs from an honest relay look the same), not forwarded, and counted as the
    ``tx_batch`` limit; what was taken is decided as always once its batch is back."""
    world, core, prover = held_node(tmp_path)
    b = core.ingest.txs.batcher
    b.max_pending = 100
    core.ingest.txs.per_peer = 1000  # one sender: the per-peer cap is its own test
    sender = world.attach(core, host="10.9.9.1")
    listener = world.attach(core, host="10.9.9.2")
    key = Identity.generate()
    now = world.clock.wall_ms()
    txs = [make_tx(key, i, b"f", now) for i in range(130)]
    for t in txs:
        data = t.encode()
        sender.receive(Publish(TOPIC_TXS, data), len(data))
    assert b.pending == 100 and b.refused == 30
    hits = core.metrics.limit_hits.labels("tx_batch")._value.get()
    assert hits == 30
    world.sched.run_due()
    prover.answer(0)
    world.sched.run_due()
    assert len(core.mempool) == 100 and txs[99].txid() in core.mempool
    assert txs[100].txid() not in core.mempool
    relayed = {m.data for m in listener.sent if isinstance(m, Publish) and m.topic == TOPIC_TXS}
    assert txs[100].encode() not in relayed and txs[0].encode() in relayed
    assert core.scores.peer_score(sender.peer_id) == 0 and sender.is_open
