"""Validation throughput of this node's code, measured against raw Ed25519 verification on the
same machine in the same run, so the figures are ratios that survive a change of hardware: how
much of the crypto ceiling the validation path reaches.

The machine is shared, so: rounds are interleaved (raw, tx, block, commit, raw, …), ratios are
taken within a round and the median over rounds is reported, and the CPU-bound paths are timed
in process CPU time (time spent descheduled by a noisy neighbour does not count). The commit
path is timed in wall time because its cost includes waiting for fsync.

The timed paths live in the node's declared testkit (netdiag.node.testkit); this module runs
them interleaved, round after round, and derives the figures.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import msgspec

from netdiag.bench import output
from netdiag.lab.cluster import pids_cpu_s
from netdiag.node import testkit
from netdiag.report.results import ResultBuilder

MIN_CORES_SPAN_S = 0.5  # CPU time is counted in 10 ms ticks: shorter calls give no share
RAW_WALL_REPEAT = 2  # raw verify wall-timed over the workload twice: long enough for a share


class Figures(msgspec.Struct):
    ed25519_verify_per_s: float
    tx_validate_per_s: float
    block_validate_per_s: float
    block_txs_validate_per_s: float
    block_commit_per_s: float
    block_commit_txs_per_s: float
    tx_vs_raw_ratio: float
    block_txs_vs_raw_ratio: float
    commit_txs_vs_raw_ratio: float
    # one core against every core, wall time, side by side (netdiag.node.sigpool); 0 in
    # results from before they were measured (bench/legacy.py)
    workers: int = 0
    raw_1core_wall_per_s: float = 0.0
    raw_pool_wall_per_s: float = 0.0
    block_txs_1core_wall_per_s: float = 0.0
    block_txs_pool_wall_per_s: float = 0.0
    raw_pool_vs_1core_ratio: float = 0.0
    block_pool_vs_1core_raw_ratio: float = 0.0
    block_1core_vs_1core_raw_ratio: float = 0.0
    # cores the host actually gave each wall-timed path (CPU seconds of this process and the
    # workers over the wall time): a 2-worker ratio of 1.1 with 1.1 cores obtained is a pool
    # that scales and a busy host, not a pool that does not scale
    raw_1core_cores: float = 0.0
    raw_pool_cores: float = 0.0
    block_1core_cores: float = 0.0
    block_pool_cores: float = 0.0
    raw_pool_per_core_vs_1core_ratio: float = 0.0  # speedup per core obtained: 1.0 = scales
    block_pool_per_core_vs_1core_ratio: float = 0.0  # the same for block validation
    # one core running the workers' own verifier (sigpool.verify_packed: libsodium when
    # present): the pool's speed-up over it is the cores' alone
    raw_1core_fast_wall_per_s: float = 0.0
    raw_1core_fast_cores: float = 0.0
    raw_pool_vs_1core_fast_ratio: float = 0.0
    block_pool_vs_1core_fast_ratio: float = 0.0
    # the tx path (gossip and API ingest): one at a time on one core vs micro-batched at the
    # workers (node/txbatch.py), wall time; and block validation pipelined (block N+1's
    # signatures at the workers while block N's other rules run), as blocks in a run are
    tx_1core_wall_per_s: float = 0.0
    tx_pool_wall_per_s: float = 0.0
    tx_1core_cores: float = 0.0
    tx_pool_cores: float = 0.0
    tx_1core_vs_1core_raw_ratio: float = 0.0
    tx_pool_vs_1core_raw_ratio: float = 0.0
    tx_pool_vs_1core_fast_ratio: float = 0.0
    tx_pool_per_core_vs_1core_ratio: float = 0.0
    block_txs_pipelined_wall_per_s: float = 0.0
    block_pipelined_cores: float = 0.0
    block_pipelined_vs_1core_raw_ratio: float = 0.0
    block_pipelined_vs_1core_fast_ratio: float = 0.0


def with_cores(f: Callable[[], float], pids: Callable[[], list[int]]) -> tuple[float, float]:
    """``f()``'s rate and the cores it obtained: CPU seconds of this process and ``pids()``
    over the wall time of the call; 0.0 when the call was too short for the kernel's CPU
    accounting (clock ticks) to say."""
    procs = [os.getpid(), *pids()]
    c0, t0 = pids_cpu_s(procs), time.perf_counter()
    rate = f()
    took = time.perf_counter() - t0
    return rate, (pids_cpu_s(procs) - c0) / took if took >= MIN_CORES_SPAN_S else 0.0


def per_core_ratio(pool: float, pool_cores: float, one: float, one_cores: float) -> float:
    """The pool's rate per core obtained over one core's rate per core obtained (0.0 when
    either share is unknown)."""
    if pool_cores <= 0 or one_cores <= 0:
        return 0.0
    return (pool / pool_cores) / (one / one_cores)


def run(
    n_blocks: int,
    txs_per_block: int,
    rounds: int,
    validators: int = 4,
    progress: Callable[[str], None] = lambda _m: None,
    workers: int = -1,
) -> tuple[Figures, list[dict[str, float]]]:
    progress(f"building {n_blocks} blocks of {txs_per_block} transactions")
    w = testkit.build_workload(n_blocks, txs_per_block, validators)
    pool = testkit.SigPool(workers)
    progress(f"starting {pool.workers} verify workers")
    pool.start()
    wall = time.perf_counter
    steps: dict[str, Callable[[], float]] = {
        "raw": lambda: testkit.raw_verify_rate(w),
        "tx": lambda: testkit.tx_validate_rate(w),
        "block": lambda: testkit.block_validate_rate(w),
        "commit": lambda: testkit.block_commit_rate(w, validators),
        "raw_1core_wall": lambda: testkit.raw_verify_wall_rate(w, repeat=RAW_WALL_REPEAT),
        "raw_pool_wall": lambda: testkit.raw_verify_wall_rate(w, pool, RAW_WALL_REPEAT),
        "raw_1core_fast_wall": lambda: testkit.raw_fast_wall_rate(w, RAW_WALL_REPEAT),
        "block_1core_wall": lambda: testkit.block_validate_rate(w, timer=wall),
        "block_pool_wall": lambda: testkit.block_validate_rate(w, pool, timer=wall),
        "block_pipelined_wall": lambda: testkit.block_validate_rate(
            w, pool, timer=wall, pipelined=True
        ),
        "tx_1core_wall": lambda: testkit.tx_validate_rate(w, wall, RAW_WALL_REPEAT),
        "tx_pool_wall": lambda: testkit.tx_batch_wall_rate(w, pool, RAW_WALL_REPEAT),
    }
    per_round: list[dict[str, float]] = []
    walled = {
        "raw_1core_wall",
        "raw_pool_wall",
        "raw_1core_fast_wall",
        "block_1core_wall",
        "block_pool_wall",
        "block_pipelined_wall",
        "tx_1core_wall",
        "tx_pool_wall",
    }
    try:
        for i in range(rounds):
            progress(f"round {i + 1}/{rounds}: raw verify, tx, block, commit, one core vs all")
            r: dict[str, float] = {}
            for k, f in steps.items():
                if k in walled:
                    r[k], r[k.replace("_wall", "_cores")] = with_cores(f, pool.worker_pids)
                else:
                    r[k] = f()
            r["tx_vs_raw"] = r["tx"] / r["raw"]
            r["block_txs_vs_raw"] = r["block"] * txs_per_block / r["raw"]
            r["commit_txs_vs_raw"] = r["commit"] * txs_per_block / r["raw"]
            one = r["raw_1core_wall"]
            r["raw_pool_vs_1core"] = r["raw_pool_wall"] / one
            r["raw_pool_vs_1core_fast"] = r["raw_pool_wall"] / r["raw_1core_fast_wall"]
            r["block_pool_vs_1core_raw"] = r["block_pool_wall"] * txs_per_block / one
            r["block_1core_vs_1core_raw"] = r["block_1core_wall"] * txs_per_block / one
            fast = r["raw_1core_fast_wall"]
            r["block_pool_vs_1core_fast"] = r["block_pool_wall"] * txs_per_block / fast
            r["block_pipelined_vs_1core_raw"] = r["block_pipelined_wall"] * txs_per_block / one
            r["block_pipelined_vs_1core_fast"] = r["block_pipelined_wall"] * txs_per_block / fast
            r["tx_1core_vs_1core_raw"] = r["tx_1core_wall"] / one
            r["tx_pool_vs_1core_raw"] = r["tx_pool_wall"] / one
            r["tx_pool_vs_1core_fast"] = r["tx_pool_wall"] / fast
            r["tx_pool_per_core_vs_1core"] = per_core_ratio(
                r["tx_pool_wall"], r["tx_pool_cores"], r["tx_1core_wall"], r["tx_1core_cores"]
            )
            r["raw_pool_per_core_vs_1core"] = per_core_ratio(
                r["raw_pool_wall"], r["raw_pool_cores"], one, r["raw_1core_cores"]
            )
            r["block_pool_per_core_vs_1core"] = per_core_ratio(
                r["block_pool_wall"],
                r["block_pool_cores"],
                r["block_1core_wall"],
                r["block_1core_cores"],
            )
            per_round.append(r)
    finally:
        pool.close()
    med = {k: statistics.median(r[k] for r in per_round) for k in per_round[0]}
    fig = Figures(
        ed25519_verify_per_s=med["raw"],
        tx_validate_per_s=med["tx"],
        block_validate_per_s=med["block"],
        block_txs_validate_per_s=med["block"] * txs_per_block,
        block_commit_per_s=med["commit"],
        block_commit_txs_per_s=med["commit"] * txs_per_block,
        tx_vs_raw_ratio=med["tx_vs_raw"],
        block_txs_vs_raw_ratio=med["block_txs_vs_raw"],
        commit_txs_vs_raw_ratio=med["commit_txs_vs_raw"],
        workers=pool.workers,
        raw_1core_wall_per_s=med["raw_1core_wall"],
        raw_pool_wall_per_s=med["raw_pool_wall"],
        block_txs_1core_wall_per_s=med["block_1core_wall"] * txs_per_block,
        block_txs_pool_wall_per_s=med["block_pool_wall"] * txs_per_block,
        raw_pool_vs_1core_ratio=med["raw_pool_vs_1core"],
        block_pool_vs_1core_raw_ratio=med["block_pool_vs_1core_raw"],
        block_1core_vs_1core_raw_ratio=med["block_1core_vs_1core_raw"],
        raw_1core_cores=med["raw_1core_cores"],
        raw_pool_cores=med["raw_pool_cores"],
        block_1core_cores=med["block_1core_cores"],
        block_pool_cores=med["block_pool_cores"],
        raw_pool_per_core_vs_1core_ratio=med["raw_pool_per_core_vs_1core"],
        block_pool_per_core_vs_1core_ratio=med["block_pool_per_core_vs_1core"],
        raw_1core_fast_wall_per_s=med["raw_1core_fast_wall"],
        raw_1core_fast_cores=med["raw_1core_fast_cores"],
        raw_pool_vs_1core_fast_ratio=med["raw_pool_vs_1core_fast"],
        block_pool_vs_1core_fast_ratio=med["block_pool_vs_1core_fast"],
        tx_1core_wall_per_s=med["tx_1core_wall"],
        tx_pool_wall_per_s=med["tx_pool_wall"],
        tx_1core_cores=med["tx_1core_cores"],
        tx_pool_cores=med["tx_pool_cores"],
        tx_1core_vs_1core_raw_ratio=med["tx_1core_vs_1core_raw"],
        tx_pool_vs_1core_raw_ratio=med["tx_pool_vs_1core_raw"],
        tx_pool_vs_1core_fast_ratio=med["tx_pool_vs_1core_fast"],
        tx_pool_per_core_vs_1core_ratio=med["tx_pool_per_core_vs_1core"],
        block_txs_pipelined_wall_per_s=med["block_pipelined_wall"] * txs_per_block,
        block_pipelined_cores=med["block_pipelined_cores"],
        block_pipelined_vs_1core_raw_ratio=med["block_pipelined_vs_1core_raw"],
        block_pipelined_vs_1core_fast_ratio=med["block_pipelined_vs_1core_fast"],
    )
    return fig, per_round


def to_result(
    fig: Figures, per_round: list[dict[str, float]], parameters: dict[str, Any]
) -> ResultBuilder:
    """summary.validate: one row per path (rate, tx rate, ratio to raw verify); summary.figures:
    every figure of the run in one row; raw.rounds: one row per interleaved round."""
    import cryptography

    res = output.new("validate", parameters, cryptography=cryptography.__version__)
    tpb = int(parameters["txs_per_block"])
    f = msgspec.structs.asdict(fig)
    for path, per_s, txs_per_s, ratio in (
        ("raw Ed25519 verify", None, f["ed25519_verify_per_s"], 1.0),
        ("tx decode+validate", None, f["tx_validate_per_s"], f["tx_vs_raw_ratio"]),
        (
            "block decode+validate",
            f["block_validate_per_s"],
            f["block_txs_validate_per_s"],
            f["block_txs_vs_raw_ratio"],
        ),
        (
            "block validate+commit (wall)",
            f["block_commit_per_s"],
            f["block_commit_txs_per_s"],
            f["commit_txs_vs_raw_ratio"],
        ),
    ):
        res.add_summary(
            "validate",
            {
                "path": path,
                "blocks_per_s": per_s,
                "txs_per_s": txs_per_s,
                "ratio_to_raw_verify": ratio,
            },
        )
    n = f["workers"]
    fast = f["raw_1core_fast_wall_per_s"] or 1.0

    def by_fast(txs_per_s: float) -> float:  # a figure with no in-round ratio of its own
        return txs_per_s / fast

    for path, txs_per_s, ratio, ratio_fast, cores in (
        ()
        if not n
        else (  # wall; ratios: median over rounds of the in-round ratio; rows of old first
            (
                "raw verify, one core (wall)",
                f["raw_1core_wall_per_s"],
                1.0,
                by_fast(f["raw_1core_wall_per_s"]),
                f["raw_1core_cores"],
            ),
            (
                f"raw verify, {n} workers (wall)",
                f["raw_pool_wall_per_s"],
                f["raw_pool_vs_1core_ratio"],
                f["raw_pool_vs_1core_fast_ratio"],
                f["raw_pool_cores"],
            ),
            (
                "block validate, one core (wall)",
                f["block_txs_1core_wall_per_s"],
                f["block_1core_vs_1core_raw_ratio"],
                by_fast(f["block_txs_1core_wall_per_s"]),
                f["block_1core_cores"],
            ),
            (
                f"block validate, {n} workers (wall)",
                f["block_txs_pool_wall_per_s"],
                f["block_pool_vs_1core_raw_ratio"],
                f["block_pool_vs_1core_fast_ratio"],
                f["block_pool_cores"],
            ),
            (
                "raw verify, one core, workers' verifier (wall)",
                f["raw_1core_fast_wall_per_s"],
                f["raw_1core_fast_wall_per_s"] / f["raw_1core_wall_per_s"],
                1.0,
                f["raw_1core_fast_cores"],
            ),
            (
                f"block validate, {n} workers, pipelined (wall)",
                f["block_txs_pipelined_wall_per_s"],
                f["block_pipelined_vs_1core_raw_ratio"],
                f["block_pipelined_vs_1core_fast_ratio"],
                f["block_pipelined_cores"],
            ),
            (
                "tx validate, one at a time, one core (wall)",
                f["tx_1core_wall_per_s"],
                f["tx_1core_vs_1core_raw_ratio"],
                by_fast(f["tx_1core_wall_per_s"]),
                f["tx_1core_cores"],
            ),
            (
                f"tx validate, micro-batched, {n} workers (wall)",
                f["tx_pool_wall_per_s"],
                f["tx_pool_vs_1core_raw_ratio"],
                f["tx_pool_vs_1core_fast_ratio"],
                f["tx_pool_cores"],
            ),
        )
    ):
        res.add_summary(
            "cores",
            {
                "path": path,
                "txs_per_s": txs_per_s,
                "ratio_to_one_core_raw": ratio,
                "ratio_to_one_core_fast": ratio_fast,
                "cores_obtained": cores or None,
            },
        )
    res.add_summary("figures", f)
    for i, r in enumerate(per_round, start=1):
        res.record("rounds", {"round": i, **r})
    res.metadata["txs_per_block"] = tpb
    return res
