"""Mempool flood: valid signed transactions from many senders POSTed to the API at full speed.

A defended node keeps its mempool within ``mempool_max_txs`` / ``mempool_max_bytes``, keeps
producing blocks, and comes back to its **warm** footprint once the flood is over: RSS after
the settle within ×1.10 of the RSS measured after a warm-up flood (the same flood, at least
``WARM_TXS`` transactions, then ``WARM_SETTLE_S`` quiet).

Why not against the cold start: a flood takes a node from cold to warm once, and that step is
bounded, not a leak (measured, docs/benchmarks.md "mempool_flood: what the 15 MB are"): the
gossip seen cache fills to its cap (``gossip_seen_max`` 8,192 records, ~2.5 MB), SQLite's page
cache to its 2 MB, the API's and the node loop's executor threads and the sig pool's feeder
threads start (with their malloc arenas, ~3.5 MB), and the allocators keep the arenas they grew.
That step is +12–16 MB on a 58 MB node whatever the flood's length, so a ×1.25 bound against
the cold start sat at the bound (×1.23–1.27) and judged the host's speed. What a flood must
not do is grow the node beyond warm: a second, longer flood against a warm node tells that.
The cold ratio stays in the row (``rss_after_ratio``) beside the warm one, and the warm-up step
itself is judged too: warm over cold within ×1.5 (``warm_bound``), so a cache without a cap
cannot hide in the baseline.
"""

from __future__ import annotations

import http.client
import json
import os
import time

from netdiag.bench.attack.base import AttackContext, Outcome
from netdiag.nodeapi import TxSigner

WARM_TXS = 12_000  # more than the node's default gossip seen cache (8,192): the cache is full
WARM_MAX_S = 20.0  # a slow host stops warming here, with fewer
WARM_SETTLE_S = 10.0  # as the runner's settle: the warm RSS is measured like the after


class MempoolFlood:
    name = "mempool_flood"
    summary = "valid txs POSTed at full speed: mempool capped, chain fine, RSS back to warm"
    rss_bound: float | None = 1.10  # after / warm (Outcome.rss_baseline), not after / cold
    # warm / cold: the warm-up step itself stays bounded (measured ×1.12–1.25, +12–16 MB on
    # 58–65 MB): a cache that grew without cap on the way to warm still fails the row
    warm_bound: float | None = 1.5
    growth_bound: float | None = 0.9

    def run(self, ctx: AttackContext) -> Outcome:
        node = ctx.cluster.nodes[ctx.target_index]
        signers = [TxSigner(os.urandom(16)) for _ in range(16)]
        warm_s, settle_s = (0.5, 0.5) if ctx.quick else (WARM_MAX_S, WARM_SETTLE_S)
        ctx.progress(f"warming up: {WARM_TXS} txs or {warm_s:g} s")
        warm = self._flood(ctx, signers, warm_s, WARM_TXS)
        time.sleep(settle_s)
        rss_warm = node.rss_bytes()
        ctx.progress(f"warm RSS {(rss_warm or 0) / 2**20:.1f} MB; flooding {ctx.duration_s:g} s")
        main = self._flood(ctx, signers, ctx.duration_s, None)
        sent, accepted, failed, mempool_max = main
        return Outcome(
            why=f"{sent} txs posted ({accepted} accepted, {failed} failed) after a warm-up of "
            f"{warm[0]}, mempool peaked at {mempool_max} txs",
            figures={
                "txs_posted": sent,
                "txs_accepted": accepted,
                "posts_failed": failed,
                "txs_per_s": round(sent / ctx.duration_s, 1),
                "mempool_max_txs_seen": max(mempool_max, warm[3]),
                "warmup_txs_posted": warm[0],
            },
            rss_baseline=rss_warm,
        )

    def _flood(
        self, ctx: AttackContext, signers: list[TxSigner], duration_s: float, max_txs: int | None
    ) -> tuple[int, int, int, int]:
        """POST txs for ``duration_s`` (or until ``max_txs``): (sent, accepted, failed,
        mempool peak seen)."""
        node = ctx.cluster.nodes[ctx.target_index]
        conn = http.client.HTTPConnection("127.0.0.1", node.api_port, timeout=5)
        sent = accepted = failed = 0
        mempool_max = 0
        end = time.monotonic() + duration_s
        payload = os.urandom(512)
        while time.monotonic() < end and (max_txs is None or sent < max_txs):
            body, _ = signers[sent % len(signers)].next_tx(payload)
            try:
                conn.request("POST", "/tx", json.dumps(body), {"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                accepted += resp.status == 202
            except (OSError, http.client.HTTPException):
                failed += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", node.api_port, timeout=5)
            sent += 1
            if sent % 500 == 0:
                st = node.status() or {}
                mempool_max = max(mempool_max, int(st.get("mempool_txs", 0)))
                ctx.progress(f"{sent} txs posted, mempool {st.get('mempool_txs')}")
        conn.close()
        st = node.status() or {}
        return sent, accepted, failed, max(mempool_max, int(st.get("mempool_txs", 0)))


ATTACK = MempoolFlood()
