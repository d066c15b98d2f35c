"""Signature batches on every core (sigpool.py): the pool's verdicts are the inline verifier's,
and a segment or block checked with a pool is accepted or rejected exactly as without one — a
forged signature inside a batch is still found, at the same block, for the same reason."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netdiag.node import crypto
from netdiag.node.chain import Chain
from netdiag.node.model import Block, Tx
from netdiag.node.segment import verify_segment
from netdiag.node.sigpool import (
    SigCheck,
    SigPool,
    pack,
    sig_checks,
    verify_chunk,
    verify_packed,
    well_formed,
)
from netdiag.node.testkit import build_chain
from tests.unit.node.chainkit import Clock, lab, open_chain, txs


def forged(tx: Tx) -> Tx:
    sig = bytes([tx.signature[0] ^ 1]) + tx.signature[1:]
    return Tx(tx.sender, tx.nonce, tx.timestamp_ms, tx.payload, sig)


def test_pool_verdicts_equal_inline(pool: SigPool) -> None:
    _, keys = lab()
    good = txs(40, keys[0])
    mixed = [forged(t) if i % 7 == 3 else t for i, t in enumerate(good)]
    items = [(t.sender, t.signature, t.signing_bytes()) for t in mixed]
    items.append((b"short", b"x", b"y"))  # malformed: False, not an exception
    assert pool.verify_many(items) == verify_chunk(items)
    assert pool.verify_many(items).count(False) == 7
    assert pool.batches >= 1, "the batch went to the workers"


def test_packed_chunks_and_the_callers_share_give_the_inline_verdicts(pool: SigPool) -> None:
    """The compact wire form (one buffer per chunk, one byte per verdict) and the chunks the
    waiting caller verifies itself: every verdict is the inline one, in order, malformed
    checks (wrong key or signature length) included wherever they sit in the batch."""
    _, keys = lab()
    good = txs(200, keys[0])
    items = [
        (t.sender, t.signature, t.signing_bytes())
        for t in (forged(t) if i % 9 == 4 else t for i, t in enumerate(good))
    ]
    items[17] = (items[17][0][:31], items[17][1], items[17][2])
    items[150] = (items[150][0], items[150][1] + b"x", b"")
    inline = verify_chunk(items)
    sane = [it for it in items if well_formed(it)]
    assert len(sane) == len(items) - 2
    assert list(verify_packed(pack(sane))) == [int(v) for v in verify_chunk(sane)]
    assert pool.verify_many(items) == inline
    assert pool.verify_many(items, share=False) == inline
    assert inline.count(False) == 22 + 2


def test_prove_later_answers_on_the_loop_which_runs_meanwhile(pool: SigPool) -> None:
    """The pipelined form: the batch goes to the workers, the loop keeps running callbacks,
    and ``done`` gets exactly the triples that verify, on the loop's own thread."""
    import asyncio
    import threading

    _, keys = lab()
    good = txs(40, keys[0])
    mixed = [forged(t) if i % 5 == 2 else t for i, t in enumerate(good)]
    items = [(t.sender, t.signature, t.signing_bytes()) for t in mixed]

    async def run() -> tuple[list[SigCheck], int, bool]:
        loop = asyncio.get_running_loop()
        got: asyncio.Future[list[SigCheck]] = loop.create_future()
        on_loop = []
        ticks = 0

        def done(ok: list[SigCheck]) -> None:
            on_loop.append(threading.current_thread() is threading.main_thread())
            got.set_result(ok)

        assert pool.prove_later(items, done)
        while not got.done():
            ticks += 1
            await asyncio.sleep(0)
        return got.result(), ticks, all(on_loop)

    ok, ticks, on_loop = asyncio.run(run())
    assert ok == [it for it, v in zip(items, verify_chunk(items), strict=True) if v]
    assert len(ok) == 32 and ticks > 0 and on_loop
    assert not pool.prove_later(items[:2], lambda _ok: None), "too small: inline"
    assert not SigPool(0).prove_later(items, lambda _ok: None), "no pool: inline"


def test_preverified_answers_only_for_its_triples(pool: SigPool) -> None:
    _, keys = lab()
    [tx] = txs(1, keys[0])
    bad = forged(tx)
    with crypto.preverified([(tx.sender, tx.signature, tx.signing_bytes())]):
        assert crypto.verify(tx.sender, tx.signature, tx.signing_bytes())
        assert not crypto.verify(bad.sender, bad.signature, bad.signing_bytes())
    assert crypto.verify(tx.sender, tx.signature, tx.signing_bytes())  # inline, as always
    bad_items = [(bad.sender, bad.signature, bad.signing_bytes())] * 10
    assert pool.prove(bad_items) == [], "a forged signature is never pre-verified"


def segment(tmp: Path, n: int, bad_height: int | None) -> tuple[Chain, list[Block]]:
    spec, keys = lab(validators=3, epoch=4)
    chain = open_chain(tmp, spec, Clock(2**62))

    def block_txs(h: int) -> list[Tx]:
        out = txs(6, keys[h % 3], start=h * 100)
        return [forged(t) if h == bad_height and i == 4 else t for i, t in enumerate(out)]

    return chain, build_chain(spec, keys, n, txs=block_txs)


@pytest.mark.parametrize("bad_height", [None, 4])
def test_a_segment_is_judged_the_same_with_a_pool(
    tmp_path: Path, pool: SigPool, bad_height: int | None
) -> None:
    chain, blocks = segment(tmp_path, 6, bad_height)
    assert len(sig_checks(blocks)) >= pool.min_batch
    inline = verify_segment(chain, blocks, 2**62)
    batches = pool.batches
    pooled = verify_segment(chain, blocks, 2**62, pool)
    assert pool.batches == batches + 1, "the segment's signatures went to the workers"
    assert [b.height for b in pooled.verified] == [b.height for b in inline.verified]
    if bad_height is None:
        assert len(pooled.verified) == 6 and pooled.error is None and inline.error is None
    else:  # stops at the forged transaction's block, for its signature
        assert len(pooled.verified) == bad_height - 1
        assert pooled.error is not None and inline.error is not None
        assert pooled.error.reason == inline.error.reason == "tx_signature"
    chain.store.close()


OWNER = """
import sys, time
from netdiag.node.sigpool import SigPool
pool = SigPool(workers=2)
pool.start()
print(*pool.worker_pids(), flush=True)
time.sleep(600)
"""


def test_workers_die_with_a_killed_node() -> None:
    """kill -9 of the node takes its workers along: none is left holding its pipes."""
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert owner.stdout is not None and owner.stderr is not None
    pids = [int(p) for p in owner.stdout.readline().split()]
    assert len(pids) == 2
    owner.send_signal(signal.SIGKILL)
    owner.wait(30)
    deadline = time.monotonic() + 30
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [p for p in pids if os.path.exists(f"/proc/{p}") and not zombie(p)]
        time.sleep(0.05)
    assert not alive, "workers outlived the node"
    owner.stderr.read()  # EOF: no process holds the node's stderr any more


def zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1].startswith("Z")
    except OSError:
        return True


def test_the_pools_verifier_accepts_nothing_inline_verify_rejects() -> None:
    """sodium.py: the workers' verifier may be stricter than ``crypto.verify`` (a triple it
    refuses is checked again inline), never looser; without libsodium it is verify itself."""
    from netdiag.node.sodium import IDENTITY, fast_verifier

    fast = fast_verifier()
    _, keys = lab()
    good = txs(20, keys[0])
    L = 2**252 + 27742317777372353535851937790883648493
    cases: list[SigCheck] = []
    for t in good:
        msg = t.signing_bytes()
        s = int.from_bytes(t.signature[32:], "little")
        cases += [
            (t.sender, t.signature, msg),
            (t.sender, forged(t).signature, msg),
            (t.sender, t.signature, msg + b"x"),
            (keys[1].node_id, t.signature, msg),
            (t.sender, t.signature[:32] + (s + L).to_bytes(32, "little"), msg),  # S >= L
        ]
    cases += [(IDENTITY, IDENTITY + bytes(32), b"any message"), (b"short", b"x", b"y")]
    for c in cases:
        assert not fast(*c) or crypto.verify(*c), c
    assert all(fast(t.sender, t.signature, t.signing_bytes()) for t in good)


def test_batches_sent_back_to_back_answer_as_one_at_a_time(pool: SigPool) -> None:
    """Pipelining (prove_soon): block N+1's batch goes to the workers before block N's is
    waited for; each answer is the one ``prove`` gives alone, a forgery never proven."""
    _, keys = lab()
    good = txs(60, keys[0])
    runs = [good[:20], [forged(t) if i == 5 else t for i, t in enumerate(good[20:40])], good[40:]]
    checks = [[(t.sender, t.signature, t.signing_bytes()) for t in run] for run in runs]
    waits = [pool.prove_soon(c, chunk=4) for c in checks]  # all sent before any is waited for
    got = [w() for w in waits]
    assert got == [pool.prove(c) for c in checks]
    assert checks[1][5] not in got[1] and len(got[1]) == 19
    assert got[0] == checks[0] and got[2] == checks[2]
