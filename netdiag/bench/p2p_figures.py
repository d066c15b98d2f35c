"""`bench p2p` figures: per-round raw rows and the summary tables of each variant."""

from __future__ import annotations

import statistics
from typing import Any

from netdiag.bench import p2p_stats
from netdiag.bench.p2p_driver import (
    ClusterDriver,
    _mean,
)
from netdiag.bench.p2p_hops import HOP_SUMMARY, hop_figures
from netdiag.bench.p2p_poster import LoadStats
from netdiag.lab.cluster import (
    NodeRun,
)
from netdiag.nodeapi import (
    metric_sum,
)


class FigurePhase(ClusterDriver):
    def _record_round(self, variant: str, runs: list[NodeRun], load_s: float) -> None:
        """Per-node deltas of this round's load phase (CPU, /metrics), kept raw for _summarise."""
        deltas = [
            {k: r.metrics_end.get(k, 0.0) - r.metrics_start.get(k, 0.0) for k in r.metrics_end}
            for r in runs
        ]
        cpus = [
            r.cpu_end_s - r.cpu_start_s
            for r in runs
            if r.cpu_start_s is not None and r.cpu_end_s is not None
        ]
        blocks = sum(metric_sum(d, "netdiag_node_blocks_produced_total") for d in deltas)
        self.result.record(
            "loads",
            {
                "variant": variant,
                "round": self.round,
                "load_s": round(load_s, 3),
                # planned (tx_rate x duration) vs offered (POSTs started in their slot) vs
                # accepted (txs_sent), with the slots shed at the in-flight bound
                **(self.poster.stats if self.poster else LoadStats()).record(),
                **self.cpu_split,
                # where a hop's time goes, from the nodes' own metrics (p2p_hops.py)
                **hop_figures(deltas, sum(cpus) if cpus else None, int(blocks)),
            },
        )
        for r in runs:
            d = {k: r.metrics_end.get(k, 0.0) - r.metrics_start.get(k, 0.0) for k in r.metrics_end}
            cpu = None
            if r.cpu_start_s is not None and r.cpu_end_s is not None:
                cpu = round((r.cpu_end_s - r.cpu_start_s) / load_s * 100, 1)
            vb_s = metric_sum(d, "netdiag_node_validation_seconds_sum", kind="block")
            vb_n = metric_sum(d, "netdiag_node_validation_seconds_count", kind="block")
            vt_s = metric_sum(d, "netdiag_node_validation_seconds_sum", kind="tx")
            vt_n = metric_sum(d, "netdiag_node_validation_seconds_count", kind="tx")
            cb_s = metric_sum(d, "netdiag_node_validation_cpu_seconds_total", kind="block")
            ct_s = metric_sum(d, "netdiag_node_validation_cpu_seconds_total", kind="tx")
            self.result.record(
                "nodes",
                {
                    "variant": variant,
                    "round": self.round,
                    "node": r.name,
                    "cpu_pct": cpu,
                    "blocks_received": metric_sum(d, "netdiag_node_blocks_received_total"),
                    "txs_received": metric_sum(d, "netdiag_node_txs_received_total"),
                    "duplicates": metric_sum(d, "netdiag_node_gossip_duplicates_total"),
                    "block_validation_s": vb_s,
                    "block_validations": vb_n,
                    "tx_validation_s": vt_s,
                    "tx_validations": vt_n,
                    "block_validation_ms_avg": round(vb_s / vb_n * 1e3, 3) if vb_n else None,
                    "tx_validation_us_avg": round(vt_s / vt_n * 1e6, 1) if vt_n else None,
                    "block_validation_cpu_s": cb_s,
                    "tx_validation_cpu_s": ct_s,
                },
            )

    def _summarise(self, variant: str) -> None:
        """The summary tables of one variant, pooled over its rounds."""
        raw = self.result.raw
        mine = [r for r in raw.get("loads", []) if r["variant"] == variant]
        load_s = sum(float(r["load_s"] or 0) for r in mine)
        for row in p2p_stats.propagation_summary(raw.get("propagation", []), variant):
            self.result.add_summary("propagation", row)
        if raw.get("transport"):
            self.result.add_summary(
                "transport", p2p_stats.transport_summary(raw["transport"], variant, load_s)
            )
        nodes = [r for r in raw.get("nodes", []) if r["variant"] == variant]
        cpu = [float(r["cpu_pct"]) for r in nodes if r["cpu_pct"] is not None]
        blk_s = sum(float(r["block_validation_s"] or 0) for r in nodes)
        blk_n = sum(float(r["block_validations"] or 0) for r in nodes)
        tx_s = sum(float(r["tx_validation_s"] or 0) for r in nodes)
        tx_n = sum(float(r["tx_validations"] or 0) for r in nodes)
        # the loop thread's CPU time beside the wall time: their ratio is what the host's run
        # queue added (a starved host inflates wall, not CPU); absent from older result files
        cblk_s = sum(float(r.get("block_validation_cpu_s") or 0) for r in nodes)
        ctx_s = sum(float(r.get("tx_validation_cpu_s") or 0) for r in nodes)
        self.result.add_summary(
            "validation",
            {
                "variant": variant,
                "block_validation_ms_avg": round(blk_s / blk_n * 1e3, 3) if blk_n else None,
                "tx_validation_us_avg": round(tx_s / tx_n * 1e6, 1) if tx_n else None,
                "block_validation_cpu_ms_avg": round(cblk_s / blk_n * 1e3, 3) if blk_n else None,
                "tx_validation_cpu_us_avg": round(ctx_s / tx_n * 1e6, 1) if tx_n else None,
                "cpu_pct_per_node_avg": round(sum(cpu) / len(cpu), 1) if cpu else None,
                "cpu_pct_per_node_max": max(cpu) if cpu else None,
                "load_s": round(load_s, 2),
                "txs_planned": sum(int(r.get("txs_planned") or 0) for r in mine),
                "txs_offered": sum(int(r.get("txs_offered") or 0) for r in mine),
                "txs_shed": sum(int(r.get("txs_shed") or 0) for r in mine),
                "txs_sent": sum(int(r["txs_sent"] or 0) for r in mine),
                "txs_failed": sum(int(r.get("txs_failed") or 0) for r in mine),
                "send_lag_p99_ms": _max(r.get("send_lag_p99_ms") for r in mine),
                "connect_p99_ms": _max(r.get("connect_p99_ms") for r in mine),
                "post_latency_p99_ms": _max(r.get("post_latency_p99_ms") for r in mine),
                "nodes_cpu_pct_total": round(sum(cpu) / max(1, len(mine)), 1) if cpu else None,
                "forwarders_cpu_pct": _mean(r.get("forwarders_cpu_pct") for r in mine),
                "bench_cpu_pct": _mean(r.get("bench_cpu_pct") for r in mine),
                "host_load_avg_1m": _mean(r.get("host_load_avg_1m") for r in mine),
            },
        )
        self.result.add_summary(
            "hops",
            {"variant": variant, **{k: _max(r.get(k) for r in mine) for k in HOP_SUMMARY}},
        )
        chains = [r for r in raw.get("chain", []) if r["variant"] == variant]
        if chains:
            self.result.add_summary(
                "chain",
                {
                    "variant": variant,
                    "rounds": len(chains),
                    "height_max": max(int(r["height_max"] or 0) for r in chains),
                    "rounds_split": sum(1 for r in chains if not r["agree"]),
                    "rounds_forked": sum(1 for r in chains if not r.get("agree_later", r["agree"])),
                },
            )
        byz = [r for r in raw.get("byzantine", []) if r["variant"] == variant]
        if byz:
            self.result.add_summary(
                "byzantine",
                {
                    "variant": variant,
                    "rounds": len(byz),
                    "joiner_synced_rounds": sum(1 for r in byz if r["joiner_synced"]),
                    "forger_banned_rounds": sum(1 for r in byz if r["forger_banned_by_joiner"]),
                },
            )
        for case in ("late_join", "restart"):
            rs = [
                r
                for r in raw.get("sync_results", [])
                if r["variant"] == variant and r["case"] == case
            ]
            if not rs:
                continue

            def med(key: str, rs: list[Any] = rs, as_int: bool = False) -> float | None:
                vals = [float(r[key]) for r in rs if r[key] is not None]
                if not vals:
                    return None
                m = statistics.median(vals)
                return round(m) if as_int else round(m, 3)

            self.result.add_summary(
                "sync",
                {
                    "variant": variant,
                    "case": case,
                    "rounds": len(rs),
                    "synced_rounds": sum(1 for r in rs if r["sync_s"] is not None),
                    "sync_s": med("sync_s"),
                    "blocks": med("blocks", as_int=True),
                    "blocks_per_s": med("blocks_per_s"),
                    "api_up_s": med("api_up_s"),
                    "sync_after_api_s": med("sync_after_api_s"),
                },
            )


def _max(values: Any) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return max(vals) if vals else None
