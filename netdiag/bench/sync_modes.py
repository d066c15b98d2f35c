"""`bench sync --mode replay,snapshot`: a joiner's time to `synchronized` and to a fully
backfilled history, replaying from genesis against starting from a snapshot, side by side.

Real `netdiag node run` processes (loopback, or the two ends of an emulated lab link with
--rtt-ms). The servers hold a chain built with the node's testkit — its first blocks carry
transfers creating --accounts accounts — and the snapshot the node itself would have written
at the last epoch boundary (testkit.seed_snapshot). Each round starts one fresh joiner per
mode, in turn, so the modes are compared under the same machine load.

--bad-sources N adds N servers that serve every snapshot chunk corrupted (the node's lab-only
``debug_corrupt_chunks``): the join must still complete, each of them banned (``bans`` in the
row: peers the joiner banned). --chunk-kb sets the seeded snapshot's chunk size (a small state
in one chunk would give a bad source nothing to serve). With --rtt-ms, ``link_bound_s`` is the
time the snapshot joiner's fetched bytes take at --rate-mbit, and ``transfer_over_link`` its
transfer (snapshot chosen -> state installed) over that bound.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from netdiag.bench import output
from netdiag.bench.sync import SLOT_MS, Placement, _node, _placement, _servers, _wait
from netdiag.node import testkit
from netdiag.nodeapi import NodeApi, metric_sum, parse_metrics
from netdiag.report.results import ResultBuilder

MODES = ("replay", "snapshot")
CHUNK_BYTES = 256 << 10
EPOCH = 100
# joiners take no snapshots of their own (a replaying joiner would pay for them); servers
# announce theirs often, so a joiner does not wait long for the first announcement
JOINER_ENV = {"NETDIAG_NODE_SNAPSHOT_INTERVAL": "0", "NETDIAG_NODE_SNAPSHOT_WAIT_S": "10"}
SERVER_ENV = {"NETDIAG_NODE_SNAPSHOT_ANNOUNCE_S": "0.5", "NETDIAG_NODE_SNAPSHOT_INTERVAL": "0"}


def _counters(place: Placement, api: int) -> tuple[float, float]:
    """Bytes the joiner received, peers it banned."""
    with NodeApi(place.ns("joiner"), api) as client:
        m = parse_metrics(client.metrics_text())
    return metric_sum(m, "netdiag_node_bytes_received_total"), metric_sum(
        m, "netdiag_node_bans_total"
    )


def _join(
    place: Placement,
    work: Path,
    name: str,
    peers: list[str],
    blocks: int,
    mode: str,
    min_sources: int = 1,
) -> dict[str, Any]:
    env = JOINER_ENV | ({"NETDIAG_NODE_SNAPSHOT_SYNC": "1"} if mode == "snapshot" else {})
    env["NETDIAG_NODE_SNAPSHOT_MIN_SOURCES"] = str(min_sources)
    budget = max(120.0, blocks / 100)
    t0 = time.perf_counter()
    with _node(place, work, "joiner", name, peers, -1, extra_env=env) as (_, api):
        st = _wait(
            place,
            "joiner",
            api,
            lambda s: s["height"] == blocks and s["synchronized"],
            budget,
            f"a {mode} joiner to reach {blocks}",
        )
        t_sync = time.perf_counter() - t0
        st = _wait(
            place,
            "joiner",
            api,
            lambda s: s["onboarding"]["backfill"]["done"],
            budget,
            f"a {mode} joiner to backfill its history",
        )
        t_full = time.perf_counter() - t0
        received, bans = _counters(place, api)
    shutil.rmtree(work / name, ignore_errors=True)
    ob = st["onboarding"]
    return {
        "time_to_synchronized_s": round(t_sync, 3),
        "time_to_backfilled_s": round(t_full, 3),
        "bytes_received": int(received),
        "snapshot_bytes_fetched": int(ob["bytes_fetched"]),
        "chunks_bad": int(ob["chunks_bad"]),
        "chunks_total": int(ob["chunks_total"]),
        "bans": int(bans),
        "transfer_s": ob["transfer_s"],
        "phase": ob["phase"],
        "sources": ob["sources"],
    }


def run(
    blocks: int,
    modes: list[str],
    accounts: int,
    rounds: int,
    rtt_ms: float = 0.0,
    servers: int = 2,
    bad_sources: int = 0,
    chunk_bytes: int = CHUNK_BYTES,
    rate_bps: int = 1_000_000_000,
    progress: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="nd-bench-sync-") as tmp,
        _placement(rtt_ms, rate_bps) as place,
    ):
        work = Path(tmp)
        progress(f"building a chain of {blocks} blocks with {accounts} accounts")
        rich = testkit.lab_identity("bench-sync-payer", 0)
        spec, keys = testkit.past_genesis(
            blocks,
            "bench-sync",
            "nd-bench",
            slot_ms=SLOT_MS,
            epoch_length=EPOCH,
            out=work,
            allocations=[(rich.node_id, 10**15)],
        )
        txs = testkit.funding_txs(rich, accounts, 1000, spec.timestamp_ms)
        chain = testkit.build_chain(spec, keys, blocks, txs=txs)
        seeded = work / "seed"
        testkit.seed_store(seeded, spec, chain)
        snap_height = blocks // EPOCH * EPOCH
        state_bytes = testkit.seed_snapshot(seeded, spec, snap_height, chunk_bytes)
        n = servers + bad_sources
        for i in range(n):
            shutil.copytree(seeded, work / f"server{i}")
        rows: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
        bad = {"NETDIAG_NODE_DEBUG_CORRUPT_CHUNKS": "1"}
        with _servers(place, work, n, blocks, SERVER_ENV, bad, bad_sources) as ports:
            for r in range(rounds):
                for mode in modes:
                    progress(f"round {r + 1}/{rounds}: a {mode} joiner from {n} peers")
                    # with bad sources, every server is a source (each bad one is asked)
                    every = n if bad_sources else 1
                    rows[mode].append(
                        _join(place, work, f"j-{mode}-{r}", ports, blocks, mode, every)
                    )
    out = []
    for mode in modes:
        rs = rows[mode]
        med = {
            k: round(statistics.median(x[k] for x in rs), 3)
            for k in ("time_to_synchronized_s", "time_to_backfilled_s", "bytes_received")
        }
        out.append(
            {
                "mode": mode,
                "history_blocks": blocks,
                "state_bytes": state_bytes,
                "accounts": accounts,
                "snapshot_height": snap_height if mode == "snapshot" else None,
                **med,
                "chunks_bad": max(x["chunks_bad"] for x in rs),
                "chunks_total": rs[-1]["chunks_total"],
                "bans_min": min(x["bans"] for x in rs),
                **_link_figures(rs, rtt_ms, rate_bps),
                "phase": rs[-1]["phase"],
                "per_peer": rs[-1]["sources"],
            }
        )
    by = {r["mode"]: r for r in out}
    ratio = None
    if "replay" in by and "snapshot" in by:
        ratio = round(
            by["snapshot"]["time_to_synchronized_s"] / by["replay"]["time_to_synchronized_s"], 3
        )
    return {
        "blocks": blocks,
        "accounts": accounts,
        "rtt_ms": rtt_ms,
        "servers": servers,
        "bad_sources": bad_sources,
        "chunk_bytes": chunk_bytes,
        "rate_bps": rate_bps if rtt_ms > 0 else None,
        "rows": out,
        "rounds": [  # every round's join, for the spread behind the medians
            {"mode": m, "round": i + 1}
            | {k: x[k] for k in ("time_to_synchronized_s", "transfer_s", "chunks_bad", "bans")}
            for m in modes
            for i, x in enumerate(rows[m])
        ],
        "snapshot_over_replay_synchronized": ratio,
        "host_cpus": os.cpu_count(),
    }


def _link_figures(rs: list[dict[str, Any]], rtt_ms: float, rate_bps: int) -> dict[str, Any]:
    """The snapshot's bytes at the link rate, and the transfer's time over it (medians)."""
    transfers = [x["transfer_s"] for x in rs if x["transfer_s"] is not None]
    if rtt_ms <= 0 or not transfers:
        return {"transfer_s": statistics.median(transfers) if transfers else None}
    bound = statistics.median(x["snapshot_bytes_fetched"] for x in rs) * 8 / rate_bps
    return {
        "transfer_s": round(statistics.median(transfers), 3),
        "link_bound_s": round(bound, 3),
        "transfer_over_link": round(statistics.median(transfers) / bound, 2) if bound else None,
        "synchronized_over_link": round(
            statistics.median(x["time_to_synchronized_s"] for x in rs) / bound, 2
        )
        if bound
        else None,
    }


def to_result(fig: dict[str, Any], parameters: dict[str, Any]) -> ResultBuilder:
    """summary.modes: one row per mode (mode, history_blocks, state_bytes,
    time_to_synchronized_s, time_to_backfilled_s, …)."""
    res = output.new("sync", parameters)
    for row in fig["rows"]:
        res.add_summary("modes", {k: v for k, v in row.items() if k != "per_peer"})
    res.add_summary(
        "ratio", {"snapshot_over_replay_synchronized": fig["snapshot_over_replay_synchronized"]}
    )
    for r in fig["rounds"]:
        res.record("rounds", r)
    for row in fig["rows"]:  # raw.per_peer: chunks each source served the snapshot joiner
        for peer, src in row["per_peer"].items():
            keep = ("chunks", "bytes", "bytes_per_s", "bad")
            res.record("per_peer", {"mode": row["mode"], "peer": peer} | {k: src[k] for k in keep})
    return res
