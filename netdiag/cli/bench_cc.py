"""`netdiag bench cc`: cubic vs bbr goodput against random loss on a lab link (the BBR
paper's loss table), plus the column a `tune --cc bbr --port` host gets."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from netdiag.cli.bench import finish, result_options
from netdiag.tune import buffers


@click.command("cc")
@click.option("--quick", is_flag=True, help="CI variant: one loss value (1 %), short runs.")
@click.option(
    "--loss",
    "losses",
    type=float,
    multiple=True,
    metavar="PCT",
    help="Loss values in percent (default: the BBR paper's 0 0.01 0.1 1 2 5 10).",
)
@click.option("--rate", default="100mbit", show_default=True, help="Link rate.")
@click.option("--rtt", default="100ms", show_default=True, help="Link round-trip time.")
@click.option("--seconds", type=float, help="Per iperf3 run (default 15, --quick 3).")
@click.option("--engine", default="auto", show_default=True, help="Lab link engine.")
@click.option("--no-tuned", is_flag=True, help="Skip the `tune --cc bbr --port` column.")
@result_options("cc")
def bench_cc(
    quick: bool,
    losses: tuple[float, ...],
    rate: str,
    rtt: str,
    seconds: float | None,
    engine: str,
    no_tuned: bool,
    out: Path | None,
    as_json: bool,
) -> None:
    """BBR paper loss table: cubic vs bbr goodput vs random loss on a lab link (iperf3)."""
    from netdiag.bench import cc as bench

    console = Console(stderr=True)
    grid = tuple(x / 100 for x in losses) or (bench.QUICK_LOSSES if quick else bench.PAPER_LOSSES)
    secs = seconds if seconds is not None else (3.0 if quick else 15.0)
    result = bench.run(
        grid,
        rate_bps=buffers.parse_rate_bps(rate),
        rtt_s=buffers.parse_duration_us(rtt) / 1e6,
        seconds=secs,
        engine=engine,
        tuned=not no_tuned,
        progress=lambda m: console.print(m),
    )
    params = {
        "losses": list(grid),
        "rate": rate,
        "rtt": rtt,
        "seconds": secs,
        "engine": engine,
        "tuned": not no_tuned,
    }
    finish(bench.to_result(result, params), out, as_json, table=bench.table(result))
