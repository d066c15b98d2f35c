"""`netdiag bench emulator`: how faithfully lab links do what they are configured to do."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from netdiag.cli.bench import finish, result_options
from netdiag.errors import InputError


@click.command(name="emulator")
@click.option("--quick", is_flag=True, help="Tiny grid for CI (a few seconds).")
@click.option("--engine", type=click.Choice(["auto", "userspace", "kernel"]), default="auto")
@click.option("--seconds", type=float, default=None, help="iperf3 run length per point.")
@result_options("emulator")
@click.option(
    "--scale",
    default=None,
    help="Instead of the grid: star labs of these spoke counts (e.g. 8,16,32,64), "
    "half the links under TCP load, half pinged.",
)
def bench_emulator(
    quick: bool,
    engine: str,
    seconds: float | None,
    out: Path | None,
    as_json: bool,
    scale: str | None,
) -> None:
    """Fidelity of the lab's links: RTT vs delay, throughput vs rate, loss vs configured, CPU."""
    from netdiag.bench import emulator, emulator_scale, emulator_tables
    from netdiag.kernel import caps
    from netdiag.lab import engines

    try:
        counts = [int(x) for x in scale.split(",")] if scale else []
    except ValueError:
        raise InputError(
            f"--scale {scale!r} is not a list of numbers", "e.g. --scale 8,16,32"
        ) from None
    # refusals come before the first progress line: one line, its own exit code (docs/cli.md)
    caps.require("CAP_SYS_ADMIN", "CAP_NET_ADMIN", why="building a lab (namespaces, links)")
    engines.choose(engine)
    console = Console(stderr=True)
    secs = seconds if seconds is not None else (2.0 if quick else 5.0)
    params: dict[str, Any] = {"quick": quick, "engine": engine, "seconds": secs, "scale": scale}
    if scale:
        rows = []
        for n in counts:
            console.print(f"star lab with {n} spokes ({n + 1} namespaces)")
            rows.append(emulator_scale.measure_scale(n, engine, secs))
        result: dict[str, Any] = {
            "benchmark": "emulator-scale",
            "time": time.time(),
            "seconds": secs,
            "engine": rows[0]["engine"] if rows else engine,
            "rows": rows,
        }
        table = emulator_tables.scale_table(rows)
    else:
        grid = emulator.QUICK_GRID if quick else emulator.FULL_GRID
        result = emulator.run(
            grid, engine=engine, seconds=secs, progress=lambda m: console.print(m)
        )
        table = emulator_tables.table(result)
    finish(emulator.to_result(result, params), out, as_json, table=table)
