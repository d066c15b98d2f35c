"""Onboarding's last step: history below the snapshot's base, fetched downwards while the node
is synchronized, one batch in flight, each batch checked against the stored headers above it.

It shares onboarding's request table and request ids (one namespace of ids, one table that
``Onboarding.on_blocks`` looks a reply up in)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from netdiag.node.errors import StoreError
from netdiag.node.link import Link
from netdiag.node.messages import Blocks, GetBlocks
from netdiag.node.model import merkle_root
from netdiag.node.onboard_state import BACKFILL_BATCH, OnboardHost, OnboardStats, Pending, Source
from netdiag.node.window_state import decode_range


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
        self.writing = False  # a batch at the store's writer thread

    def step(self) -> None:
        store = self.host.chain.store
        base = store.base_height()
        if not base:
            if self.stats.backfill_done_at is None and self.stats.restored_at is not None:
                self.stats.backfill_done_at = self.clock()
            return
        in_flight = any(r.kind == "backfill" for r in self.pending.values())
        if in_flight or self.writing or not self.host.synchronized():
            return
        peers = [c for c in self.host.conns.values() if c.is_open]
        if not peers:
            return
        start = max(1, base - BACKFILL_BATCH)
        count = base - start
        s = Source(min(peers, key=lambda c: c.peer_id or b""), timeout_s=self.timeout_s)
        rid = next(self._ids)
        now = self.clock()
        self.pending[rid] = Pending(s.conn, "backfill", start, now, now + 10.0)
        s.conn.send(GetBlocks(rid, start, count))

    def on_blocks(self, conn: Link, msg: Blocks) -> None:
        r = self.pending.pop(msg.req_id)
        store = self.host.chain.store
        base = store.base_height()
        blocks, offence = decode_range(msg.blocks, r.key, base - r.key)
        if offence or len(blocks) != base - r.key:
            self.host.penalize(conn, 20.0, f"backfill answer unusable ({offence or 'short'})")
            return
        if any(merkle_root([t.txid() for t in b.txs]) != b.header.tx_root for b in blocks):
            self.host.ban(conn, "backfill: transactions do not match their header")
            return
        self.writing = True  # on the store's writer thread: the loop goes on meanwhile
        store.backfill_later(blocks, lambda out: self._written(conn, len(blocks), out))

    def _written(self, conn: Link, n: int, out: int | StoreError) -> None:
        self.writing = False
        if isinstance(out, StoreError):
            self.host.ban(conn, f"backfill: {out}")
            return
        self.stats.backfilled += n
        self.step()  # the next batch at once: one request in flight, never idle
        if out == 0:
            self.stats.backfill_done_at = self.clock()
            self.host.info(
                "backfill_done",
                f"history backfilled: blocks 1..{self.stats.backfilled} below the snapshot stored",
                blocks=self.stats.backfilled,
            )
