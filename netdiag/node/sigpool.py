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

import asyncio
import concurrent.futures
import contextlib
import ctypes
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Iterable

from netdiag.node import crypto
from netdiag.node.model import BLOCK_DOMAIN, Block

SigCheck = tuple[bytes, bytes, bytes]  # public key, signature, signed message
PR_SET_PDEATHSIG = 1
MIN_BATCH = 64  # fewer checks than this are not worth the trip to a worker
WORKER_NICE = 10  # verify workers yield the CPU to the node process (its loop answers the API)
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


def die_with_parent(parent: int) -> None:
    """Worker initializer: a node killed with -9 takes its workers along (Linux: the kernel
    sends SIGKILL when the parent dies), so none outlives it holding its pipes open; workers
    run at a lower priority (``WORKER_NICE``) so a busy pool does not delay the node's loop."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: workers exit at the pool's EOF instead
        return
    if os.getppid() != parent:  # the parent died before the call
        os._exit(1)
    with contextlib.suppress(OSError):  # batch work: the node's own loop gets a core first
        os.nice(WORKER_NICE)


def quiet_resource_tracker() -> None:
    """Start multiprocessing's resource tracker with stderr on /dev/null. It outlives a node
    killed with -9 by a moment and then warns about the pool's semaphores on the stderr it
    inherited — the node's log, which is JSON lines only. (fd 2 is swapped for the few
    milliseconds of the spawn, at start-up, before the node's other threads log.)"""
    from multiprocessing import resource_tracker

    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        resource_tracker.ensure_running()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class SigPool:
    """``workers`` processes (-1: one per usable CPU; 0 or 1: inline, no pool)."""

    def __init__(
        self,
        workers: int = -1,
        min_batch: int = MIN_BATCH,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.workers = cpu_count() if workers < 0 else workers
        self.min_batch = min_batch
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self.batches = 0  # sent to the pool
        self.checks = 0
        self.error: str | None = None  # why the pool could not start (then: inline)
        self.on_error = on_error
        self._starting = threading.Lock()  # started by the loop or by sync's off-loop thread

    @property
    def parallel(self) -> bool:
        return self.workers > 1

    def start(self) -> None:
        """Start the workers (else the first batch does). Spawned, not forked: the node
        process has threads (API, writer), and a spawned worker is the node's own child, so
        ``die_with_parent`` ties its life to the node's."""
        with self._starting:
            self._start()

    def _start(self) -> None:
        if not self.parallel or self._pool is not None:
            return
        quiet_resource_tracker()
        self._pool = concurrent.futures.ProcessPoolExecutor(
            self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=die_with_parent,
            initargs=(os.getpid(),),
        )
        try:
            list(self._pool.map(verify_chunk, [[]] * self.workers))  # warm: every worker up
        except Exception as e:  # e.g. an embedding __main__ that cannot be re-imported
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool, self.workers, self.error = None, 0, repr(e)
            if self.on_error is not None:
                self.on_error(self.error)

    def start_soon(self) -> None:
        """Start the workers on a thread of the running loop's executor, off the loop (a
        spawn costs the node a second or so on a busy machine); until they are up,
        ``prove_later`` declines and its callers verify inline."""
        if self.parallel and self._pool is None:
            asyncio.get_running_loop().run_in_executor(None, self.start)

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

    def prove_later(self, items: list[SigCheck], done: Callable[[list[SigCheck]], None]) -> bool:
        """``prove`` without waiting: the batch goes to the workers and ``done`` gets the
        triples that verified later, on the calling (running) event loop, which meanwhile
        goes on. False (``done`` never called) when there is no pool, no running loop or
        the batch is not worth the trip: the caller then verifies inline, as always. A pool
        that fails mid-batch answers ``done([])`` — nothing preverified, all checked inline."""
        if not self.parallel or len(items) < self.min_batch:
            return False
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        if self._pool is None and self._starting.locked():
            return False  # the workers are still starting (start_soon): inline meanwhile
        self.start()
        if self._pool is None:
            return False
        size = max(self.min_batch // 2, -(-len(items) // self.workers))
        parts = [items[i : i + size] for i in range(0, len(items), size)]
        self.batches += 1
        self.checks += len(items)
        futs = [asyncio.wrap_future(self._pool.submit(verify_chunk, p), loop=loop) for p in parts]
        gathered = asyncio.gather(*futs)

        def finished(g: asyncio.Future[list[list[bool]]]) -> None:
            if g.cancelled() or g.exception() is not None:
                done([])
                return
            oks = [ok for part in g.result() for ok in part]
            done([it for it, ok in zip(items, oks, strict=True) if ok])

        gathered.add_done_callback(finished)
        return True

    def worker_pids(self) -> list[int]:
        return list(getattr(self._pool, "_processes", {}) or {})

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
