"""`netdiag bench …`: benchmarks that print and save figures (ratios measured side by side)."""

from __future__ import annotations

import click

from netdiag.cli.main import LazyGroup

# name -> "module:attr"; each benchmark lives with the capability it measures.
BENCHMARKS: dict[str, str] = {
    "validate": "netdiag.cli.node_bench:validate",
    "emulator": "netdiag.cli.lab:bench_emulator",
    "cc": "netdiag.cli.tune:bench_cc",
    "probes": "netdiag.cli.bench_probes:probes",
    "sync": "netdiag.cli.sync_bench:sync",
    "p2p": "netdiag.cli.bench_p2p:bench_p2p",
}


@click.group(cls=LazyGroup, lazy=BENCHMARKS)
def bench() -> None:
    """Benchmarks: each prints its figures and saves them as JSON."""
