"""Onboarding's last step: history below the snapshot's base, fetched downwards while the node
is synchronized, one batch in flight, each batch checked against the stored headers above it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from netdiag.node.errors import StoreError
from netdiag.node.link import Link
from netdiag.node.messages import Blocks, GetBlocks
from netdiag.node.model import merkle_root
from netdiag.node.onboard_state import BACKFILL_BATCH, Pending, Source
from netdiag.node.window_state import decode_range

if TYPE_CHECKING:
    from netdiag.node.onboard import Onboarding


def backfill_step(ob: Onboarding) -> None:
    store = ob.host.chain.store
    base = store.base_height()
    if not base:
        if ob.stats.backfill_done_at is None and ob.stats.restored_at is not None:
            ob.stats.backfill_done_at = ob.clock()
        return
    if ob._kind_pending("backfill") or not ob.host.synchronized():
        return
    peers = [c for c in ob.host.conns.values() if c.is_open]
    if not peers:
        return
    start = max(1, base - BACKFILL_BATCH)
    count = base - start
    s = Source(min(peers, key=lambda c: c.peer_id or b""), timeout_s=ob.p.timeout_max_s)
    rid = next(ob._ids)
    now = ob.clock()
    ob.pending[rid] = Pending(s.conn, "backfill", start, now, now + 10.0)
    s.conn.send(GetBlocks(rid, start, count))


def on_backfill(ob: Onboarding, conn: Link, msg: Blocks) -> None:
    r = ob.pending.pop(msg.req_id)
    store = ob.host.chain.store
    base = store.base_height()
    blocks, offence = decode_range(msg.blocks, r.key, base - r.key)
    if offence or len(blocks) != base - r.key:
        ob.host.penalize(conn, 20.0, f"backfill answer unusable ({offence or 'short'})")
        return
    if any(merkle_root([t.txid() for t in b.txs]) != b.header.tx_root for b in blocks):
        ob.host.ban(conn, "backfill: transactions do not match their header")
        return
    try:
        store.backfill(blocks)
    except StoreError as e:
        ob.host.ban(conn, f"backfill: {e}")
        return
    ob.stats.backfilled += len(blocks)
    backfill_step(ob)  # the next batch at once: one request in flight, never idle
    if store.base_height() == 0:
        ob.stats.backfill_done_at = ob.clock()
        ob.host.info(
            "backfill_done",
            f"history backfilled: blocks 1..{r.key + len(blocks) - 1 + 1} stored",
            blocks=ob.stats.backfilled,
        )
