"""bench p2p's per-hop figures from the nodes' /metrics deltas (p2p_hops.hop_figures)."""

from __future__ import annotations

from netdiag.bench.p2p_hops import COMPACT, COMPACT_MISSING, HOLD, HOP_SUMMARY, hop_figures


def hold(topic: str, counts: dict[str, float]) -> dict[str, float]:
    return {f"{HOLD}_bucket{{le={le},topic={topic}}}": n for le, n in counts.items()}


def test_hold_quantiles_pool_the_nodes_and_keep_topics_apart() -> None:
    a = hold("blocks", {"0.001": 9, "0.01": 10, "+Inf": 10}) | hold(
        "txs", {"0.001": 0, "0.01": 0, "+Inf": 4}
    )
    b = hold("blocks", {"0.001": 0, "0.01": 90, "+Inf": 90})
    out = hop_figures([a, b], node_cpu_s=2.0, blocks=4)
    assert out["block_hold_n"] == 100
    assert out["block_hold_p50_ms"] == 10.0  # 9 of 100 within 1 ms: the median is in (1, 10]
    assert out["tx_hold_n"] == 4 and out["tx_hold_p99_ms"] == 10.0  # beyond the last bound
    assert out["node_cpu_ms_per_block"] == 500.0
    assert out["loop_lag_p99_ms"] is None and out["block_backlog_p99_bytes"] is None
    assert set(HOP_SUMMARY) <= set(out)
    assert out["compact_received"] == 0 and out["compact_fallbacks"] == 0  # relay off


def test_compact_relay_counts_sum_over_the_nodes() -> None:
    def ev(event: str, n: float) -> dict[str, float]:
        return {f"{COMPACT}{{event={event}}}": n}

    a = ev("received", 10) | ev("rebuilt", 8) | ev("txn_requested", 2) | ev("fallback_timeout", 1)
    b = ev("received", 5) | ev("rebuilt", 5) | ev("fallback_bad_answer", 1)
    b[COMPACT_MISSING] = 3
    out = hop_figures([a, b], node_cpu_s=None, blocks=0)
    assert out["compact_received"] == 15 and out["compact_rebuilt"] == 13
    assert out["compact_txn_requests"] == 2 and out["compact_missing_txs"] == 3
    assert out["compact_fallbacks"] == 2
