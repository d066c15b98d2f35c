"""Mempool flood: valid signed transactions from many senders POSTed to the API at full speed.

A defended node keeps its mempool within ``mempool_max_txs`` / ``mempool_max_bytes``, its RSS
within +25 % once the flood is over, and keeps producing blocks.
"""

from __future__ import annotations

import http.client
import json
import os
import time

from netdiag.bench.attack.base import AttackContext, Outcome
from netdiag.nodeapi import TxSigner


class MempoolFlood:
    name = "mempool_flood"
    summary = "valid txs POSTed at full speed: mempool stays capped, RSS and chain fine"
    rss_bound: float | None = 1.25
    growth_bound: float | None = 0.9

    def run(self, ctx: AttackContext) -> Outcome:
        node = ctx.cluster.nodes[ctx.target_index]
        signers = [TxSigner(os.urandom(16)) for _ in range(16)]
        conn = http.client.HTTPConnection("127.0.0.1", node.api_port, timeout=5)
        sent = accepted = failed = 0
        mempool_max = 0
        end = time.monotonic() + ctx.duration_s
        payload = os.urandom(512)
        while time.monotonic() < end:
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
        mempool_max = max(mempool_max, int(st.get("mempool_txs", 0)))
        return Outcome(
            why=f"{sent} txs posted ({accepted} accepted, {failed} failed), "
            f"mempool peaked at {mempool_max} txs",
            figures={
                "txs_posted": sent,
                "txs_accepted": accepted,
                "posts_failed": failed,
                "txs_per_s": round(sent / ctx.duration_s, 1),
                "mempool_max_txs_seen": mempool_max,
            },
        )


ATTACK = MempoolFlood()
