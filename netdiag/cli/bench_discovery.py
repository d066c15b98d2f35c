"""`netdiag bench discovery`: a node cluster forming from one bootstrap through Kademlia —
formation time, lookup hops and latency, discovery bytes, and Sybil share of a victim's
outbound peers (docs/benchmarks.md)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from netdiag.bench.output import default_out
from netdiag.cli.bench import result_file_option
from netdiag.output import emit_json


@click.command()
@click.option("--nodes", type=click.IntRange(2, 200), default=16, show_default=True)
@click.option(
    "--duration",
    type=click.FloatRange(5),
    default=120.0,
    show_default=True,
    help="Seconds of steady state after formation (discovery bytes per minute).",
)
@click.option(
    "--sybils",
    type=click.IntRange(0, 250),
    default=32,
    show_default=True,
    help="Sybil identities on one /24 for the eclipse phase (0: skip it).",
)
@click.option(
    "--refresh",
    "refresh_s",
    type=click.FloatRange(1),
    default=60.0,
    show_default=True,
    help="The nodes' self-lookup and bucket refresh period, seconds (the node's default).",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(10),
    default=300.0,
    show_default=True,
    help="Give up on formation after this many seconds.",
)
@click.option("--tls/--no-tls", default=True, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@result_file_option("discovery")
@click.option("--json", "as_json", is_flag=True, help="Print the result JSON instead of tables.")
def discovery(
    nodes: int,
    duration: float,
    sybils: int,
    refresh_s: float,
    timeout_s: float,
    tls: bool,
    seed: int,
    out: Path | None,
    as_json: bool,
) -> None:
    """Cluster formation from one bootstrap, lookups and eclipse resistance (real nodes on
    loopback, one 127.77.I.1 address per node)."""
    from netdiag.bench import discovery as scenario
    from netdiag.errors import CheckFailed
    from netdiag.report.results import save

    console = Console(stderr=True)
    params = scenario.Params(nodes, duration, sybils, refresh_s, timeout_s, tls, seed)
    doc = scenario.run(params, lambda s: None if as_json else console.print(s))
    out = save(doc, out or default_out("discovery"))
    if as_json:
        emit_json(doc)
    else:
        for name, rows in doc["summary"].items():
            t = Table(title=f"discovery: {name}")
            for col in rows[0]:
                t.add_column(col)
            for row in rows:
                t.add_row(*("-" if v is None else str(v) for v in row.values()))
            Console().print(t)
        console.print(f"result: {out}")
    form = doc["summary"]["formation"][0]
    if form["tables_s"] is None or form["connected_s"] is None:
        raise CheckFailed(
            f"the cluster did not form within {timeout_s:g} s (see {out})",
            "raise --timeout, or check the node logs with NETDIAG_KEEP_WORK=1",
        )
