"""`netdiag bench …`: benchmarks that print and save figures (ratios measured side by side)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from netdiag.cli.main import LazyGroup

if TYPE_CHECKING:
    from netdiag.report.results import ResultBuilder

F = TypeVar("F", bound=Callable[..., Any])

# name -> "module:attr"; each benchmark lives with the capability it measures.
BENCHMARKS: dict[str, str] = {
    "validate": "netdiag.cli.bench_validate:validate",
    "emulator": "netdiag.cli.bench_emulator:bench_emulator",
    "cc": "netdiag.cli.bench_cc:bench_cc",
    "probes": "netdiag.cli.bench_probes:probes",
    "sync": "netdiag.cli.bench_sync:sync",
    "p2p": "netdiag.cli.bench_p2p:bench_p2p",
    "attack": "netdiag.cli.bench_attack:attack",
    "discovery": "netdiag.cli.bench_discovery:discovery",
    "exporter-soak": "netdiag.cli.bench_exporter:exporter_soak",
    "diagnose": "netdiag.cli.bench_diagnose:diagnose",
}


@click.group(cls=LazyGroup, lazy=BENCHMARKS)
def bench() -> None:
    """Benchmarks: each prints its figures and saves them as JSON."""


# Options every benchmark spells the same way.
def result_file_option(name: str) -> Callable[[F], F]:
    """--out, default results/bench-NAME.json ($NETDIAG_RESULTS/… when set)."""
    return click.option(
        "--out",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help=f"Result JSON file (default: results/bench-{name}.json).",
    )


def result_options(name: str) -> Callable[[F], F]:
    """--out (see result_file_option) and --json: the pair every benchmark ends with, read by
    `finish`."""

    def decorate(f: F) -> F:
        f = click.option(
            "--json", "as_json", is_flag=True, help="Print the result JSON instead of tables."
        )(f)
        return result_file_option(name)(f)

    return decorate


def finish(
    result: ResultBuilder, out: Path | None, as_json: bool, table: Any = None
) -> dict[str, Any]:
    """Save the result (schema-checked) and show it: the one JSON line with --json, else
    `table` (a rich renderable) or its summary tables as `netdiag report` prints them (100
    columns off a terminal), and where it was saved."""
    from netdiag.bench.output import default_out
    from netdiag.output import console, emit_json
    from netdiag.report import results, tables, terminal

    doc = result.to_dict()
    path = results.save(doc, out or default_out(result.benchmark.replace(" ", "-")))
    if as_json:
        emit_json(doc)
    else:
        from rich.console import Console

        if table is not None:
            console().print(table)
        else:
            terminal.print_tables(console(), tables.summary_tables(doc))
        Console(stderr=True).print(f"saved {path} (`netdiag report {path}` renders it)")
    return doc


def interleaved_rounds_option(default: int) -> Callable[[F], F]:
    return click.option(
        "--rounds",
        type=click.IntRange(1),
        default=default,
        show_default=True,
        help="Interleaved rounds; medians of per-round figures and ratios are reported.",
    )
