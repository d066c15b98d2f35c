"""Onboarding's last step: history below the snapshot's base, fetched downwards while the node
is synchronized, each batch checked against the stored headers above it.

A window of ``WINDOW`` requests of ``BACKFILL_BATCH`` blocks is in flight, spread over the
connected peers (one at a time cost a round trip per 128 blocks: 42 s for 50,000 blocks on a
100 ms link); answers may come in any order and are written strictly downwards, each on the
store's writer thread, linked to the base the one before it left.

It shares onboarding's request table and request ids (one namespace of ids, one table that
``Onboarding.on_blocks`` looks a reply up in)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial

from netdiag.node.errors import StoreError
from netdiag.node.link import Link
from netdiag.node.messages import Blocks, GetBlocks
from netdiag.node.model import Block, merkle_root
from netdiag.node.onboard_state import BACKFILL_BATCH, OnboardHost, OnboardStats, Pending
from netdiag.node.window_state import decode_range

WINDOW = 8  # backfill requests in flight
HELD = 2 * WINDOW  # answers held while a lower one waits for a higher one


class Backfill:
    def __init__(
        self,
        host: OnboardHost,
        stats: OnboardStats,
        clock: Callable[[], float],
        pending: dict[int, Pending],
        ids: Iterator[int],
        timeout_s: float,
    ) -> None:
        self.host = host
        self.stats = stats
        self.clock = clock
        self.pending = pending
        self._ids = ids
        self.timeout_s = timeout_s
        self.low: int | None = None  # lowest height requested (None: from the store's base)
        self.top: int | None = None  # the next write ends right below this height
        self.span: dict[int, tuple[int, int]] = {}  # start -> (end, request id) in flight
        self.retry: list[tuple[int, int]] = []  # ranges whose request failed
        self.got: dict[int, tuple[list[Block], Link]] = {}  # end -> answer held for its turn
        self.gen = 0  # a refused write starts a new generation from the store's base
        self._rr = 0

    def step(self) -> None:
        store = self.host.chain.store
        base = store.base_height()
        if not base:
            if self.stats.backfill_done_at is None and self.stats.restored_at is not None:
                self.stats.backfill_done_at = self.clock()
            return
        if not self.host.synchronized():
            return
        peers = sorted((c for c in self.host.conns.values() if c.is_open), key=_peer_key)
        if not peers:
            return
        if self.low is None or self.top is None:
            self.low = self.top = base
        while len(self.span) < WINDOW and len(self.got) < HELD:
            if self.retry:
                start, end = self.retry.pop()
            elif self.low > 1:
                start, end = max(1, self.low - BACKFILL_BATCH), self.low
                self.low = start
            else:
                return
            conn = peers[self._rr % len(peers)]
            self._rr += 1
            rid = next(self._ids)
            now = self.clock()
            self.pending[rid] = Pending(conn, "backfill", start, now, now + self.timeout_s)
            self.span[start] = (end, rid)
            conn.send(GetBlocks(rid, start, end - start))

    def timed_out(self, r: Pending) -> None:
        """Onboarding's tick dropped the request: its range goes to another peer."""
        got = self.span.pop(r.key, None)
        if got is not None:
            self.retry.append((r.key, got[0]))

    def on_blocks(self, conn: Link, msg: Blocks) -> None:
        r = self.pending.pop(msg.req_id)
        span = self.span.get(r.key)
        if span is None or span[1] != msg.req_id:
            return  # from before a restart of the backfill: its range is asked again
        end = span[0]
        del self.span[r.key]
        blocks, offence = decode_range(msg.blocks, r.key, end - r.key)
        if offence or len(blocks) != end - r.key:
            self.host.penalize(conn, 20.0, f"backfill answer unusable ({offence or 'short'})")
            self.retry.append((r.key, end))
        elif any(merkle_root([t.txid() for t in b.txs]) != b.header.tx_root for b in blocks):
            self.host.ban(conn, "backfill: transactions do not match their header")
            self.retry.append((r.key, end))
        else:
            self.got[end] = (blocks, conn)
            self._flush()
        self.step()

    def _flush(self) -> None:
        """Queue, strictly downwards, every held answer whose turn it is."""
        store = self.host.chain.store
        while self.top is not None and self.top in self.got:
            blocks, conn = self.got.pop(self.top)
            store.backfill_later(blocks, partial(self._written, conn, len(blocks), self.gen))
            self.top = blocks[0].height

    def _written(self, conn: Link, n: int, gen: int, out: int | StoreError) -> None:
        if isinstance(out, StoreError):
            if gen == self.gen:  # the first refusal: the batches queued after it fail too
                self.host.ban(conn, f"backfill: {out}")
                self._restart()
            return
        self.stats.backfilled += n
        if out == 0 and self.stats.backfill_done_at is None:
            self.stats.backfill_done_at = self.clock()
            self.host.info(
                "backfill_done",
                f"history backfilled: blocks 1..{self.stats.backfilled} below the snapshot stored",
                blocks=self.stats.backfilled,
            )
        self.step()

    def _restart(self) -> None:
        self.gen += 1
        for _end, rid in self.span.values():
            self.pending.pop(rid, None)
        self.span.clear()
        self.retry.clear()
        self.got.clear()
        self.low = self.top = None
        self.step()


def _peer_key(c: Link) -> bytes:
    return c.peer_id or b""
