"""Transactions in micro-batches: their signatures checked together on every core.

A transaction from gossip or the API used to be verified alone, inline, on the loop: one core
whatever the pool. Now the ones that need a signature check wait in a batch (``TxBatcher``):
each turn of the loop what collected goes to the sig pool as one batch
(``SigPool.prove_later``) while the next collects behind it, with up to ``max_inflight``
batches at the workers. When a batch's proofs are back (and every batch before it is
applied), its transactions are applied in arrival order by the same code as before
(``Ingest.accept_tx``) under ``crypto.preverified``: a signature the batch did not prove is
verified again inline by the node's one rule, so a forgery is refused exactly as before —
same error, same penalty to the sender, same API answer — and nonce order is arrival order.
A batch too small for the pool (``SigPool.min_batch``) with none in flight is applied
inline, as before, on the loop's next turn (``call_soon``, after what that turn already
runs): a quiet node adds no pool trip.

Bounded: at most ``max_pending`` transactions (and ``max_pending_bytes``) wait, collecting
and in flight together, and at most ``TxIntake.per_peer`` (a quarter of that) from one
gossiping connection; beyond that ``offer`` refuses, and the caller drops a gossiped
transaction unforwarded (limit ``tx_batch``) and forgets its id (a later copy is taken), or
answers an API client ``busy``.

``TxIntake`` is the ingest side: gossip and API transactions screened as before, then
batched; an API transaction that finds nothing waiting is checked at once (the API's threads
bring requests a few at a time, never a batch's worth). Sans-IO: the scheduler and the pool's
callback are injected.
"""

from __future__ import annotations

import functools
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgspec

from netdiag.node.crypto import preverified
from netdiag.node.messages import TOPIC_TXS
from netdiag.node.model import Tx, decode_tx
from netdiag.node.runtime import Scheduler
from netdiag.node.sigpool import SigCheck

if TYPE_CHECKING:
    from netdiag.node.ingest import Ingest
    from netdiag.node.link import Link

MAX_BATCH = 1024  # transactions per batch at the pool (~50 ms of one core's checks)
MAX_PENDING = 4096  # transactions waiting, collecting and in flight
MAX_PENDING_BYTES = 16 << 20
MAX_INFLIGHT = 2  # batches at the workers at once: one verifies while one's results apply

Prover = Callable[[list[SigCheck], Callable[[list[SigCheck]], None]], bool]


@dataclass(slots=True)
class _Batch:
    checks: list[SigCheck] = field(default_factory=list)
    applies: list[Callable[[], None]] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    proven: list[SigCheck] | None = None  # set when the pool answered (or declined: [])


class TxBatcher:
    """Signature checks batched for the pool, results applied in arrival order."""

    def __init__(
        self,
        prove_later: Prover,
        scheduler: Scheduler,
        min_batch: int,
        max_batch: int = MAX_BATCH,
        max_pending: int = MAX_PENDING,
        max_pending_bytes: int = MAX_PENDING_BYTES,
        max_inflight: int = MAX_INFLIGHT,
        on_error: Callable[[Exception], None] | None = None,
    ) -> None:
        self.prove_later = prove_later
        self.scheduler = scheduler
        self.min_batch = max(1, min_batch)
        self.max_batch = max(self.min_batch, max_batch)
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self.max_inflight = max(1, max_inflight)
        self.on_error = on_error
        self._collecting = _Batch()
        self._inflight: deque[_Batch] = deque()
        self._flush_soon = False
        self.pending = 0  # transactions collecting or in flight
        self.pending_bytes = 0
        self.batches = 0  # sent to the pool
        self.inline = 0  # applied without a pool batch (small or declined)
        self.refused = 0  # offers refused: full

    def offer(self, check: SigCheck, size: int, apply: Callable[[], None]) -> bool:
        """Queue ``apply`` (it verifies ``check`` by the node's rule, which answers from the
        batch's proofs); False (nothing queued) when the batch is full."""
        if self.pending >= self.max_pending or self.pending_bytes + size > self.max_pending_bytes:
            self.refused += 1
            return False
        b = self._collecting
        b.checks.append(check)
        b.applies.append(apply)
        b.sizes.append(size)
        self.pending += 1
        self.pending_bytes += size
        if not self._flush_soon:
            self._flush_soon = True
            self.scheduler.call_soon(self._flush)
        return True

    def _flush(self) -> None:
        self._flush_soon = False
        while self._collecting.applies and len(self._inflight) < self.max_inflight:
            n = len(self._collecting.applies)
            if n < self.min_batch:
                if self._inflight:
                    return  # wait for more behind the batch in flight
                self._apply(self._take(n), [])  # small, nothing in flight: inline now
                self.inline += n
                continue
            b = self._take(min(n, self.max_batch))
            self._inflight.append(b)
            try:
                sent = self.prove_later(b.checks, functools.partial(self._proved, b))
            except Exception as e:  # a broken pool: declined, else the batch waits for ever
                sent = False
                if self.on_error is not None:
                    self.on_error(e)
            if sent:
                self.batches += 1
            else:  # no pool (yet, or it broke): inline, in order
                self.inline += len(b.applies)
                self._proved(b, [])

    def _take(self, n: int) -> _Batch:
        src = self._collecting
        if n == len(src.applies):
            self._collecting = _Batch()
            return src
        out = _Batch(src.checks[:n], src.applies[:n], src.sizes[:n])
        del src.checks[:n], src.applies[:n], src.sizes[:n]
        return out

    def _proved(self, b: _Batch, ok: list[SigCheck]) -> None:
        b.proven = ok
        while self._inflight and self._inflight[0].proven is not None:
            head = self._inflight.popleft()
            self._apply(head, head.proven or [])
        if self._collecting.applies and not self._flush_soon:
            self._flush_soon = True
            self.scheduler.call_soon(self._flush)

    def _apply(self, b: _Batch, proven: list[SigCheck]) -> None:
        self.pending -= len(b.applies)
        self.pending_bytes -= sum(b.sizes)
        with preverified(proven):
            for apply in b.applies:
                try:
                    apply()
                except Exception as e:  # one transaction's bug must not lose the others
                    if self.on_error is None:
                        raise
                    self.on_error(e)


class TxIntake:
    """Gossiped and API transactions into the batcher, screened and answered as before."""

    def __init__(self, ingest: Ingest, batcher: TxBatcher, per_peer: int | None = None) -> None:
        self.ingest = ingest
        self.batcher = batcher
        # gossiped txs one connection may have waiting (None: a quarter of max_pending), so
        # one peer's flood cannot fill the bound every peer shares
        self.per_peer = per_peer
        self.by_peer: dict[bytes, int] = {}  # waiting gossip txs per sending peer
        # gossip txs waiting in a batch, by id: a compact block naming one is rebuilt with it
        # (compact.py; the block's full check verifies it) instead of asking for it again
        self.waiting: dict[bytes, Tx] = {}

    def gossip(self, conn: Link, mid: bytes, data: bytes) -> None:
        """A first-seen Publish on the transaction topic (Ingest.on_publish)."""
        ing = self.ingest
        ing.metrics.txs_received.labels("gossip").inc()
        try:
            tx = decode_tx(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            ing.reject_tx(conn, "format", f"tx does not decode: {e}")
            self._gossip_verdict(conn, mid, data, "reject")
            return
        # known, nonce taken or stale: ignored before any signature check (accept_tx again
        # when it applies, since what arrived before it may have changed the answer)
        txid = tx.txid()
        if ing.unwanted_tx(tx, txid) is not None:
            self._gossip_verdict(conn, mid, data, "ignore")
            return

        pid = conn.peer_id or b""
        cap = self.per_peer if self.per_peer is not None else self.batcher.max_pending // 4
        waiting = self.by_peer.get(pid, 0)

        def apply() -> None:
            self.waiting.pop(txid, None)
            left = self.by_peer.get(pid, 0) - 1
            if left > 0:
                self.by_peer[pid] = left
            else:
                self.by_peer.pop(pid, None)
            verdict = ing.accept_tx(tx, "gossip", conn, len(data))
            self._gossip_verdict(conn, mid, data, verdict)

        if waiting >= max(1, cap) or not self.batcher.offer(_check(tx), len(data), apply):
            # no room: ignored unchecked and unforwarded, and forgotten, so that an honest
            # copy arriving later is taken rather than dropped as a duplicate
            ing.metrics.limit_hits.labels("tx_batch").inc()
            self._gossip_verdict(conn, mid, data, "ignore")
            ing.gossip.forget(mid)
            return
        self.by_peer[pid] = waiting + 1
        self.waiting[txid] = tx

    def _gossip_verdict(self, conn: Link, mid: bytes, data: bytes, verdict: str) -> None:
        ing = self.ingest
        ing.forward(conn, TOPIC_TXS, ing.gossip.validated(mid, data, verdict))

    def api(self, tx: Tx, done: Callable[[str, bytes], None]) -> None:
        """POST /tx: ``done(verdict, txid)`` once checked (accept | ignore | reject, or busy
        when the batch is full: nothing was checked, the client may retry; error when the
        check raised in a batch)."""
        ing = self.ingest
        data = tx.encode()
        if self.batcher.pending == 0:
            # Nothing waiting: checked now, as before. The API's requests reach the loop a few
            # at a time (its threads), never a pool batch's worth; batching them would only add
            # a turn and the allocations it takes (bench attack's mempool_flood measures those).
            done(*ing.submit_checked(tx, data))
            return

        def apply() -> None:  # behind the waiting ones: arrival order (nonces) kept
            try:
                answer = ing.submit_checked(tx, data)
            except Exception:  # the client is told now (500), not after its wait runs out
                done("error", tx.txid())
                raise  # to the batcher's on_error (logged); the batch's others go on
            done(*answer)

        if not self.batcher.offer(_check(tx), len(data), apply):
            ing.metrics.limit_hits.labels("tx_batch").inc()
            done("busy", tx.txid())


def _check(tx: Tx) -> SigCheck:
    return tx.sender, tx.signature, tx.signing_bytes()


def log_error(ingest: Ingest) -> Callable[[Exception], None]:
    def report(e: Exception) -> None:
        ingest.log.error(
            "internal_error", f"tx batch: applying a tx failed: {e!r}", exc=traceback.format_exc()
        )

    return report
