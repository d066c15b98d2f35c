"""`netdiag bench …`: benchmarks that print and save figures (ratios measured side by side)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from netdiag.cli.main import LazyGroup

F = TypeVar("F", bound=Callable[..., Any])

# name -> "module:attr"; each benchmark lives with the capability it measures.
BENCHMARKS: dict[str, str] = {
    "validate": "netdiag.cli.node_bench:validate",
    "emulator": "netdiag.cli.lab:bench_emulator",
    "cc": "netdiag.cli.tune:bench_cc",
    "probes": "netdiag.cli.bench_probes:probes",
    "sync": "netdiag.cli.sync_bench:sync",
    "p2p": "netdiag.cli.bench_p2p:bench_p2p",
    "attack": "netdiag.cli.bench_attack:attack",
}


@click.group(cls=LazyGroup, lazy=BENCHMARKS)
def bench() -> None:
    """Benchmarks: each prints its figures and saves them as JSON."""


# Options every benchmark spells the same way.
def result_file_option(default: str) -> Callable[[F], F]:
    return click.option(
        "--out",
        type=click.Path(dir_okay=False, path_type=Path),
        default=Path(default),
        show_default=True,
        help="Result JSON file.",
    )


def interleaved_rounds_option(default: int) -> Callable[[F], F]:
    return click.option(
        "--rounds",
        type=click.IntRange(1),
        default=default,
        show_default=True,
        help="Interleaved rounds; medians of per-round figures and ratios are reported.",
    )
