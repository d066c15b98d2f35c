"""Ed25519 verification on every core: batches of signature checks over a process pool.

Python verifies one signature at a time on one core (and holds the GIL doing it). A block's
producer and transaction signatures, or a whole sync segment's, are independent, so
``SigPool.verify_many`` splits them over worker processes; while they work the node process
only waits (GIL free: its API thread answers). The checks keep their one rule set:
``preverified`` lets ``crypto.verify`` answer from the batch's results for exactly the
(key, signature, message) triples that verified, so a signature the batch rejected (or never
saw) is checked again, inline, by the same rule as always.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
from collections.abc import Iterable

from netdiag.node import crypto
from netdiag.node.model import BLOCK_DOMAIN, Block

SigCheck = tuple[bytes, bytes, bytes]  # public key, signature, signed message
MIN_BATCH = 64  # fewer checks than this are not worth the trip to a worker
CHUNKS_PER_WORKER = 2  # a late chunk on a busy core holds the batch less


def sig_checks(blocks: Iterable[Block]) -> list[SigCheck]:
    """Every signature a block's validation verifies: the producer's and each transaction's."""
    out: list[SigCheck] = []
    for b in blocks:
        out.append((b.header.producer, b.signature, BLOCK_DOMAIN + b.hash))
        out.extend((t.sender, t.signature, t.signing_bytes()) for t in b.txs)
    return out


def verify_chunk(items: list[SigCheck]) -> list[bool]:
    """In a worker process."""
    return [crypto.verify(*it) for it in items]


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class SigPool:
    """``workers`` processes (-1: one per usable CPU; 0 or 1: inline, no pool)."""

    def __init__(self, workers: int = -1, min_batch: int = MIN_BATCH) -> None:
        self.workers = cpu_count() if workers < 0 else workers
        self.min_batch = min_batch
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self.batches = 0  # sent to the pool
        self.checks = 0

    @property
    def parallel(self) -> bool:
        return self.workers > 1

    def start(self) -> None:
        """Start the workers now (forkserver: the node process has threads, so no fork of
        it; each worker imports only the verifier) rather than on the first batch."""
        if not self.parallel or self._pool is not None:
            return
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["netdiag.node.sigpool"])
        self._pool = concurrent.futures.ProcessPoolExecutor(self.workers, mp_context=ctx)
        list(self._pool.map(verify_chunk, [[]] * self.workers))  # warm: every worker up

    def verify_many(self, items: list[SigCheck]) -> list[bool]:
        if not self.parallel or len(items) < self.min_batch:
            return verify_chunk(items)
        self.start()
        assert self._pool is not None
        n = self.workers * CHUNKS_PER_WORKER
        size = max(self.min_batch // 2, -(-len(items) // n))
        chunks = [items[i : i + size] for i in range(0, len(items), size)]
        self.batches += 1
        self.checks += len(items)
        out: list[bool] = []
        for part in self._pool.map(verify_chunk, chunks):
            out.extend(part)
        return out

    def prove(self, items: list[SigCheck]) -> list[SigCheck]:
        """The triples of ``items`` that verify (for ``crypto.preverified``); none when the
        batch is not worth a pool (validation then verifies each inline, once, as always)."""
        if not self.parallel or len(items) < self.min_batch:
            return []
        return [it for it, ok in zip(items, self.verify_many(items), strict=True) if ok]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
