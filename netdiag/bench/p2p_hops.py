"""`bench p2p`: what each node adds to a hop, from its own `/metrics` (load-phase deltas).

The propagation rows give a hop's total excess over the links (delay minus the shortest-path
bound, per hop); these say where it goes: the node's hold from the read that completed a frame
to its forward (`forward_hold_seconds`), the bytes a forwarded block found queued ahead of it on
each peer's socket (`forward_backlog_bytes`), how late the node's loop runs its timers
(`loop_lag_seconds`: what a readable socket waits), and the node CPU spent per block; with
compact block relay, how the blocks were rebuilt (`compact_blocks_total{event}`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from netdiag.bench.p2p_discovery import histogram_bound, histogram_buckets, pooled_buckets
from netdiag.nodeapi import metric_sum

HOLD = "netdiag_node_forward_hold_seconds"
BACKLOG = "netdiag_node_forward_backlog_bytes"
LOOP_LAG = "netdiag_node_loop_lag_seconds"
COMPACT = "netdiag_node_compact_blocks_total"
COMPACT_MISSING = "netdiag_node_compact_missing_txs_total"
FALLBACKS = ("fallback_timeout", "fallback_not_held", "fallback_bad_answer")
# summary.hops: the worst round of each (the rounds' histograms are not kept)
HOP_SUMMARY = (
    "block_hold_p50_ms",
    "block_hold_p99_ms",
    "tx_hold_p50_ms",
    "tx_hold_p99_ms",
    "block_backlog_p50_bytes",
    "block_backlog_p99_bytes",
    "loop_lag_p50_ms",
    "loop_lag_p99_ms",
    "node_cpu_ms_per_block",
    "compact_txn_requests",
    "compact_missing_txs",
    "compact_fallbacks",
)


def _only(metrics: Mapping[str, float], label: str) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if label in k}


def _pooled(
    deltas: Sequence[Mapping[str, float]], name: str, label: str = ""
) -> dict[float, float]:
    return pooled_buckets([histogram_buckets(_only(d, label), name) for d in deltas])


def _bound(buckets: dict[float, float], q: float, scale: float) -> float | None:
    """The upper bound of the bucket holding quantile q (bucket bounds, not interpolated: a
    hold of 3 ms reads '≤ 5 ms'), scaled to the row's unit."""
    v = histogram_bound(buckets, q)
    return None if v is None else round(v * scale, 3)


def hop_figures(
    deltas: Sequence[Mapping[str, float]], node_cpu_s: float | None, blocks: int
) -> dict[str, Any]:
    """One `loads` row's per-hop fields from every node's /metrics deltas of the load phase.

    ``node_cpu_s``: all nodes' CPU seconds in the load phase; ``blocks``: blocks made in it."""
    out: dict[str, Any] = {}
    for kind, label in (("block", "topic=blocks"), ("tx", "topic=txs")):
        b = _pooled(deltas, HOLD, label)
        out[f"{kind}_hold_n"] = int(max(b.values(), default=0))
        out[f"{kind}_hold_p50_ms"] = _bound(b, 0.5, 1e3)
        out[f"{kind}_hold_p99_ms"] = _bound(b, 0.99, 1e3)
    b = _pooled(deltas, BACKLOG)
    out["block_backlog_n"] = int(max(b.values(), default=0))
    out["block_backlog_p50_bytes"] = _bound(b, 0.5, 1)
    out["block_backlog_p99_bytes"] = _bound(b, 0.99, 1)
    b = _pooled(deltas, LOOP_LAG)
    out["loop_lag_p50_ms"] = _bound(b, 0.5, 1e3)
    out["loop_lag_p99_ms"] = _bound(b, 0.99, 1e3)
    per_block = node_cpu_s / blocks * 1e3 if node_cpu_s is not None and blocks else None
    out["node_cpu_ms_per_block"] = None if per_block is None else round(per_block, 1)

    def compact(event: str) -> int:
        return int(sum(metric_sum(d, COMPACT, event=event) for d in deltas))

    # compact block relay, all nodes: blocks received compact, rebuilt from the pool alone,
    # those that needed a getblocktxn, the txs it asked for, and full-block fallbacks
    received = compact("received")
    out["compact_received"] = received
    out["compact_rebuilt"] = compact("rebuilt")
    out["compact_txn_requests"] = compact("txn_requested")
    out["compact_missing_txs"] = int(sum(metric_sum(d, COMPACT_MISSING) for d in deltas))
    out["compact_fallbacks"] = sum(compact(e) for e in FALLBACKS)
    out["compact_failed"] = compact("failed")
    return out
