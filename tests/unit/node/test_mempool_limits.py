"""Bounded mempool and token buckets."""

from __future__ import annotations

from netdiag.node.crypto import Identity
from netdiag.node.limits import TokenBucket
from netdiag.node.mempool import Mempool
from netdiag.node.model import make_tx


def test_mempool_bounds_evict_oldest_and_take_in_order() -> None:
    who = Identity.generate()
    txs = [make_tx(who, i, b"x" * 10, 0) for i in range(5)]
    pool = Mempool(max_txs=3, max_bytes=10_000)
    for t in txs:
        pool.add(t.txid(), t, 100)
    assert len(pool) == 3 and pool.evicted == 2
    assert txs[0].txid() not in pool and txs[4].txid() in pool
    assert not pool.add(txs[4].txid(), txs[4], 100)  # duplicate
    assert pool.take(2, 10_000) == txs[2:4]
    assert pool.take(10, 150) == txs[2:3]  # byte budget
    pool.remove([txs[2].txid()])
    assert len(pool) == 2 and pool.size_bytes == 200
    small = Mempool(max_txs=100, max_bytes=250)
    for t in txs:
        small.add(t.txid(), t, 100)
    assert len(small) == 2 and small.size_bytes == 200


def test_token_bucket_rate_burst_and_wait() -> None:
    now = [0.0]
    b = TokenBucket(rate=10, burst=20, clock=lambda: now[0])
    assert sum(b.take() for _ in range(30)) == 20
    now[0] = 1.0
    assert sum(b.take() for _ in range(30)) == 10
    assert b.wait_time(5) == 0.5  # owes 5 tokens at 10/s
    now[0] = 100.0
    assert b.wait_time(5) == 0.0
