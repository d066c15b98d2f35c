"""`netdiag bench validate`: the node's block and transaction validation throughput as a ratio
to raw Ed25519 verification measured in the same run."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import click
import msgspec
from rich.console import Console
from rich.table import Table

from netdiag.cli.bench import interleaved_rounds_option, result_file_option
from netdiag.output import emit_json


@click.command()
@click.option("--blocks", type=click.IntRange(1), default=40, show_default=True)
@click.option("--txs-per-block", type=click.IntRange(1), default=250, show_default=True)
@interleaved_rounds_option(5)
@result_file_option("bench-validate.json")
@click.option("--json", "as_json", is_flag=True, help="Print the result JSON instead of a table.")
def validate(blocks: int, txs_per_block: int, rounds: int, out: Path, as_json: bool) -> None:
    """Block and tx validation throughput vs raw Ed25519 verify (same machine, same run)."""
    import cryptography

    from netdiag.bench import validate as benchmark

    t0 = time.time()
    fig, per_round = benchmark.run(blocks, txs_per_block, rounds)
    doc = {
        "benchmark": "validate",
        "command": "netdiag bench validate "
        + f"--blocks {blocks} --txs-per-block {txs_per_block} --rounds {rounds}",
        "started_unix_s": round(t0, 3),
        "duration_s": round(time.time() - t0, 3),
        "params": {"blocks": blocks, "txs_per_block": txs_per_block, "rounds": rounds},
        "host": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "cryptography": cryptography.__version__,
        },
        "results": msgspec.structs.asdict(fig),
        "rounds": per_round,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    if as_json:
        emit_json(doc)
        return
    t = Table(
        title=f"validation throughput ({blocks} blocks x {txs_per_block} txs, median of {rounds})"
    )
    t.add_column("path")
    t.add_column("per_s", justify="right")
    t.add_column("txs_per_s", justify="right")
    t.add_column("ratio_to_raw_verify", justify="right")
    t.add_row("raw Ed25519 verify", "", f"{fig.ed25519_verify_per_s:,.0f}", "1.00")
    t.add_row(
        "tx decode+validate", "", f"{fig.tx_validate_per_s:,.0f}", f"{fig.tx_vs_raw_ratio:.2f}"
    )
    t.add_row(
        "block decode+validate",
        f"{fig.block_validate_per_s:,.1f}",
        f"{fig.block_txs_validate_per_s:,.0f}",
        f"{fig.block_txs_vs_raw_ratio:.2f}",
    )
    t.add_row(
        "block validate+commit (wall)",
        f"{fig.block_commit_per_s:,.1f}",
        f"{fig.block_commit_txs_per_s:,.0f}",
        f"{fig.commit_txs_vs_raw_ratio:.2f}",
    )
    console = Console()
    console.print(t)
    console.print("ratios: median of per-round ratios; CPU time except the commit path")
    console.print(f"saved {out}")
