"""`netdiag bench exporter-soak`: the exporter's RSS under connection churn."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from netdiag.bench.output import default_out
from netdiag.cli.bench import result_options
from netdiag.output import emit_json


@click.command("exporter-soak")
@click.option("--duration", type=float, default=600.0, show_default=True, help="Seconds.")
@click.option(
    "--rate", type=float, default=300.0, show_default=True, help="Connections opened per second."
)
@click.option(
    "--peers", type=int, default=32, show_default=True, help="Distinct 127.0.0.x client addresses."
)
@click.option("--interval", type=float, default=5.0, show_default=True, help="Exporter interval.")
@click.option("--sample", type=float, default=5.0, show_default=True, help="Seconds per sample.")
@click.option("--max-series", type=int, default=256, show_default=True)
@click.option("--no-bpf", is_flag=True, help="Run the exporter on sock_diag polling.")
@click.option("--verdicts/--no-verdicts", default=True, help="Run the verdict engine too.")
@result_options("exporter-soak")
def exporter_soak(
    duration: float,
    rate: float,
    peers: int,
    interval: float,
    sample: float,
    max_series: int,
    no_bpf: bool,
    verdicts: bool,
    out: Path | None,
    as_json: bool,
) -> None:
    """Churn loopback connections under a `netdiag exporter`; RSS end vs after minute one."""
    from netdiag.bench.exporter_soak import soak
    from netdiag.report.results import save

    err = Console(stderr=True)
    doc = soak(
        duration,
        rate,
        peers,
        interval,
        sample,
        no_bpf,
        max_series,
        lambda m: err.print(m),
        verdicts=verdicts,
    )
    out = save(doc, out or default_out("exporter-soak"))
    if as_json:
        emit_json(doc)
        return
    (row,) = doc["summary"]["soak"]
    t = Table(title="netdiag exporter under connection churn", box=None, header_style="bold")
    t.add_column("figure")
    t.add_column("value", justify="right")
    for k, v in row.items():
        t.add_row(k, "-" if v is None else str(v))
    con = Console()
    con.print(t)
    con.print(
        f"rss_growth_pct: RSS at the end against RSS at t={row['rss_base_t_s']} s "
        "(after warm-up); target within 10 %"
    )
    con.print(f"result: {out}")
