"""`netdiag bench sync`: blocks/s of a late joiner syncing from 1, 2, 4 … peers, and the
speed-up over the first peer count, measured interleaved in one run."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from netdiag.cli.bench import interleaved_rounds_option, result_file_option
from netdiag.errors import InputError
from netdiag.output import emit_json


def _peer_counts(value: str) -> list[int]:
    try:
        counts = [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        counts = []
    if not counts or any(c < 1 or c > 16 for c in counts) or len(set(counts)) != len(counts):
        raise InputError(
            f"--peers {value!r} is not a list of distinct peer counts",
            "pass distinct integers 1..16 separated by commas, e.g. --peers 1,2,4",
        )
    return counts


@click.command()
@click.option("--peers", "peers", default="1,2,4", show_default=True, help="Peer counts.")
@click.option("--blocks", type=click.IntRange(64), default=5000, show_default=True)
@interleaved_rounds_option(3)
@result_file_option("bench-sync.json")
@click.option(
    "--rtt-ms",
    type=click.FloatRange(0),
    default=0.0,
    show_default=True,
    help="0: all on loopback. Else servers and joiner sit at the two ends of an emulated lab "
    "link with this round-trip delay (root; namespaces nd-sync-*, removed on exit).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result JSON instead of a table.")
def sync(peers: str, blocks: int, rounds: int, rtt_ms: float, out: Path, as_json: bool) -> None:
    """Late-joiner sync throughput from several peers (real node processes)."""
    from netdiag.bench import sync as scenario

    counts = _peer_counts(peers)
    t0 = time.time()
    fig = scenario.run(blocks, counts, rounds, rtt_ms)
    doc = {
        "benchmark": "sync",
        "started_unix_s": round(t0, 3),
        "duration_s": round(time.time() - t0, 3),
        "params": {"peers": counts, "blocks": blocks, "rounds": rounds, "rtt_ms": rtt_ms},
        "host": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": fig.pop("host_cpus"),
        },
        "results": fig["results"],
        "rounds": fig["rounds"],
        "baseline_peers": fig["baseline_peers"],
        "verify_ceiling_blocks_per_s": fig["verify_ceiling_blocks_per_s"],
        "chain_build_s": fig["chain_build_s"],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    if as_json:
        emit_json(doc)
        return
    where = f"over a {rtt_ms:g} ms RTT lab link" if rtt_ms else "on loopback"
    t = Table(
        title=f"late-joiner sync of {blocks} blocks {where} (median of {rounds} interleaved rounds)"
    )
    cols = (
        "peers",
        "blocks_per_s",
        "sync_s",
        "wall_s",
        f"speedup_vs_{counts[0]}_peer",
        "of_ceiling",
    )
    for col in cols:
        t.add_column(col, justify="right")
    for r in fig["results"].values():
        t.add_row(
            str(r["peers"]),
            f"{r['blocks_per_s']:,.0f}",
            f"{r['sync_s']:.2f}",
            f"{r['wall_s']:.2f}",
            f"{r['speedup_vs_baseline']:.2f}",
            f"{r['fraction_of_verify_ceiling']:.2f}",
        )
    console = Console()
    console.print(t)
    console.print(
        f"verify ceiling (the joiner's verify+commit path in process, CPU time, no network): "
        f"{fig['verify_ceiling_blocks_per_s']:,.0f} blocks/s"
    )
    console.print(
        "sync_s: the joiner's own sync start..finish; wall_s: process start to tip; "
        "speed-up: median of per-round ratios"
    )
    console.print(f"saved {out}")
