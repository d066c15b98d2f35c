"""`netdiag bench validate`: the node's block and transaction validation throughput as a ratio
to raw Ed25519 verification measured in the same run."""

from __future__ import annotations

from pathlib import Path

import click

from netdiag.cli.bench import finish, interleaved_rounds_option, result_options


@click.command()
@click.option("--blocks", type=click.IntRange(1), default=40, show_default=True)
@click.option("--txs-per-block", type=click.IntRange(1), default=250, show_default=True)
@interleaved_rounds_option(5)
@click.option(
    "--workers",
    type=click.IntRange(-1),
    default=-1,
    show_default=True,
    help="Verify worker processes for the multi-core figures (-1: one per CPU).",
)
@result_options("validate")
def validate(
    blocks: int, txs_per_block: int, rounds: int, workers: int, out: Path | None, as_json: bool
) -> None:
    """Block and tx validation throughput vs raw Ed25519 verify (same machine, same run).

    Ratios: median of per-round ratios; CPU time except the commit path (wall, fsync)."""
    from rich.console import Console

    from netdiag.bench import validate as bench

    err = Console(stderr=True)
    with err.status("validate: starting") as status:
        fig, per_round = bench.run(
            blocks,
            txs_per_block,
            rounds,
            progress=lambda m: status.update(f"validate: {m}"),
            workers=workers,
        )
    params = {"blocks": blocks, "txs_per_block": txs_per_block, "rounds": rounds}
    params["workers"] = workers
    finish(bench.to_result(fig, per_round, params), out, as_json)
