"""Ed25519 verification on every core: batches of signature checks over a process pool.

Python verifies one signature at a time on one core (and holds the GIL doing it). A block's
producer and transaction signatures, or a whole sync segment's, are independent, so
``SigPool.verify_many`` splits them over worker processes; while they work the node process
only waits (GIL free: its API thread answers). The checks keep their one rule set:
``preverified`` lets ``crypto.verify`` answer from the batch's results for exactly the
(key, signature, message) triples that verified, so a signature the batch rejected (or never
saw) is checked again, inline, by the same rule as always.

The per-signature cost of the trip is kept small: a chunk travels as one bytes buffer
(key, signature, length, message per check; ``pack``), not a list of pickled tuples, and its
verdicts come back as one byte each. Chunks are small (``MAX_CHUNK``) so the workers stay
balanced to the end of a batch, and a caller that waits for the batch (``verify_many``,
``prove``) verifies chunks itself, taken from the batch's tail while no worker has started
them, instead of idling: it runs at the node's own priority, the workers at ``WORKER_NICE``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import multiprocessing
import os
import signal
import struct
import threading
from collections.abc import Callable, Iterable
from concurrent.futures.process import BrokenProcessPool

from netdiag.node import crypto
from netdiag.node.model import BLOCK_DOMAIN, Block
from netdiag.node.sodium import fast_verifier

SigCheck = tuple[bytes, bytes, bytes]  # public key, signature, signed message
PR_SET_PDEATHSIG = 1
MIN_BATCH = 64  # fewer checks than this are not worth the trip to a worker
WORKER_NICE = 10  # verify workers yield the CPU to the node process (its loop answers the API)
CHUNKS_PER_WORKER = 4  # per verifier (workers + a waiting caller): balance at the batch's end
MIN_CHUNK = 16  # checks per trip to a worker: ~1 ms of verification, vs ~0.1 ms of IPC
MAX_CHUNK = 128  # ~10 ms: the longest a batch waits for its last chunk
# batches sent back to back (prove_soon, pipelined): the next keeps the workers busy at one's
# end, so chunks can be bigger than balance alone allows (less IPC per check)
PIPELINED_CHUNK = 64
_LEN = struct.Struct("<I")
# a check in ``pack``'s buffer: key [0, _KEY), signature [_KEY, _SIG_END), length, message
_KEY, _SIG_END = crypto.PUBKEY_LEN, crypto.PUBKEY_LEN + crypto.SIG_LEN
_FIXED = _SIG_END + _LEN.size


def sig_checks(blocks: Iterable[Block]) -> list[SigCheck]:
    """Every signature a block's validation verifies: the producer's and each transaction's."""
    out: list[SigCheck] = []
    for b in blocks:
        out.append((b.header.producer, b.signature, BLOCK_DOMAIN + b.hash))
        out.extend((t.sender, t.signature, t.signing_bytes()) for t in b.txs)
    return out


def verify_chunk(items: list[SigCheck]) -> list[bool]:
    """Inline (one core): the node's own rule, batch results included."""
    return [crypto.verify(*it) for it in items]


def _result(fut: concurrent.futures.Future[bytes]) -> bytes | None:
    """A worker's verdicts if it finished its chunk, else None."""
    if fut.done() and not fut.cancelled() and fut.exception() is None:
        return fut.result()
    return None


def well_formed(it: SigCheck) -> bool:
    return len(it[0]) == crypto.PUBKEY_LEN and len(it[1]) == crypto.SIG_LEN


def pack(items: list[SigCheck]) -> bytes:
    """Well-formed checks (``well_formed``) as one buffer: key, signature, message length
    (u32 LE), message, per check."""
    parts: list[bytes] = []
    for key, sig, msg in items:
        parts += (key, sig, _LEN.pack(len(msg)), msg)
    return b"".join(parts)


def verify_packed(buf: bytes) -> bytes:
    """In a worker process: ``pack``'s checks verified by ``sodium.fast_verifier`` (libsodium
    where the system has it: it accepts nothing ``crypto.verify_raw`` rejects, and a check it
    refuses is verified again inline by the node's rule), one byte (1 or 0) per check."""
    out = bytearray()
    verify, unpack, i, n = fast_verifier(), _LEN.unpack_from, 0, len(buf)
    while i < n:
        (ln,) = unpack(buf, i + _FIXED - _LEN.size)
        j = i + _FIXED + ln
        out.append(verify(buf[i : i + _KEY], buf[i + _KEY : i + _SIG_END], buf[i + _FIXED : j]))
        i = j
    return bytes(out)


def die_with_parent(parent: int, nice: int = WORKER_NICE) -> None:
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
        os.nice(nice)


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
        nice: int = WORKER_NICE,
    ) -> None:
        self.workers = cpu_count() if workers < 0 else workers
        self.min_batch = min_batch
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self.batches = 0  # sent to the pool
        self.checks = 0
        self.error: str | None = None  # why the pool could not start (then: inline)
        self.restarts = 0  # pools dropped because a worker died
        self.on_error = on_error
        self.nice = nice  # the workers' niceness (0: the node's own priority)
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
            initargs=(os.getpid(), self.nice),
        )
        try:
            list(self._pool.map(verify_packed, [b""] * self.workers))  # warm: every worker up
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

    def chunk_size(self, n: int, verifiers: int) -> int:
        return min(MAX_CHUNK, max(MIN_CHUNK, -(-n // (verifiers * CHUNKS_PER_WORKER))))

    def verify_many(self, items: list[SigCheck], share: bool = True) -> list[bool]:
        """Every check's verdict, as ``verify_chunk`` gives it — or stricter: batches of
        ``min_batch`` and more, on the workers and, with ``share``, on the calling thread too,
        go through ``sodium.fast_verifier``, which may refuse what ``crypto.verify`` accepts
        (never the reverse); so use its True answers only (``prove``), never its False."""
        return self.verify_soon(items, share)()

    def verify_soon(
        self, items: list[SigCheck], share: bool = True, chunk: int = 0
    ) -> Callable[[], list[bool]]:
        """``verify_many`` started now and answered when the returned function is called:
        meanwhile the batch is at the workers and the caller does other work (a block's other
        rules while the next block's signatures are checked); the call then waits, verifying
        (with ``share``) the chunks no worker has started yet itself."""
        if not self.parallel or len(items) < self.min_batch:
            return lambda: verify_chunk(items)
        self.start()
        pool = self._pool
        if pool is None:
            return lambda: verify_chunk(items)
        sane = [i for i, it in enumerate(items) if well_formed(it)]
        todo = items if len(sane) == len(items) else [items[i] for i in sane]
        size = chunk or self.chunk_size(len(todo), self.workers + share)
        chunks = [todo[i : i + size] for i in range(0, len(todo), size)]
        try:
            futs = [pool.submit(verify_packed, pack(c)) for c in chunks]
        except BrokenProcessPool:  # a worker died: this batch inline, the next call restarts
            self.broken(pool)
            return lambda: verify_chunk(items)
        self.batches += 1
        self.checks += len(items)

        def wait() -> list[bool]:
            parts: list[list[bool] | bytes | None] = [None] * len(chunks)
            j, fast = len(chunks) - 1, fast_verifier()
            while share and j >= 0 and futs[j].cancel():  # no worker took it yet: the caller's
                parts[j] = [fast(*it) for it in chunks[j]]
                j -= 1
            try:
                for i in range(j + 1):
                    parts[i] = futs[i].result()
            except BrokenProcessPool:
                # a worker died mid-batch: the next call restarts the pool, a block in flight
                # is not lost. Chunks already answered (by a worker, or by the caller's
                # `fast`) are kept as the unbroken path keeps them; only the rest go inline
                self.broken(pool)
                for i, c in enumerate(chunks):
                    if parts[i] is None:
                        parts[i] = _result(futs[i])
                    if parts[i] is None:
                        parts[i] = verify_chunk(c)
            oks = [bool(ok) for part in parts for ok in part or ()]
            if len(sane) == len(items):
                return oks
            out = [False] * len(items)
            for i, ok in zip(sane, oks, strict=True):
                out[i] = ok
            return out

        return wait

    def prove(self, items: list[SigCheck]) -> list[SigCheck]:
        """The triples of ``items`` that verify (for ``crypto.preverified``); none when the
        batch is not worth a pool (validation then verifies each inline, once, as always)."""
        return self.prove_soon(items)()

    def prove_soon(self, items: list[SigCheck], chunk: int = 0) -> Callable[[], list[SigCheck]]:
        """``prove`` started now, answered when called (``verify_soon``): pipelining."""
        if not self.parallel or len(items) < self.min_batch:
            return lambda: []
        wait = self.verify_soon(items, chunk=chunk)
        return lambda: [it for it, ok in zip(items, wait(), strict=True) if ok]

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
        todo = [it for it in items if well_formed(it)]
        size = self.chunk_size(len(todo), self.workers)
        parts = [todo[i : i + size] for i in range(0, len(todo), size)]
        self.batches += 1
        self.checks += len(items)
        pool = self._pool
        try:
            futs = [
                asyncio.wrap_future(pool.submit(verify_packed, pack(p)), loop=loop) for p in parts
            ]
        except BrokenProcessPool:  # a worker died: inline meanwhile, a new pool starts
            self.broken(pool)
            self.start_soon()
            return False
        gathered = asyncio.gather(*futs)

        def finished(g: asyncio.Future[list[bytes]]) -> None:
            if g.cancelled() or g.exception() is not None:
                done([])
                return
            oks = [ok for part in g.result() for ok in part]
            done([it for it, ok in zip(todo, oks, strict=True) if ok])

        gathered.add_done_callback(finished)
        return True

    def broken(self, pool: concurrent.futures.ProcessPoolExecutor) -> None:
        """``pool`` lost a worker (``BrokenProcessPool``): dropped, so the next ``start``
        (``start_soon``, or the next batch) spawns a new one."""
        with self._starting:
            if self._pool is pool:
                self._pool = None
                self.restarts += 1
        pool.shutdown(wait=False, cancel_futures=True)

    def worker_pids(self) -> list[int]:
        return list(getattr(self._pool, "_processes", {}) or {})

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
