"""`netdiag bench diagnose`: the verdict engine against lab scenarios built for each verdict."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console, Group
from rich.table import Table

from netdiag.cli.bench import finish, result_options
from netdiag.diagnose import VERDICTS
from netdiag.errors import InputError

ABBREV = {v: "".join(w[0] for w in v.split("-")) for v in VERDICTS} | {"none": "-"}


@click.command("diagnose")
@click.option("--quick", is_flag=True, help="One scenario per verdict (CI).")
@click.option("--window", type=float, default=3.0, show_default=True, help="Diagnose window, s.")
@click.option("--only", multiple=True, help="Only scenarios whose name contains this text.")
@click.option(
    "--engine",
    type=click.Choice(["userspace", "kernel", "auto"]),
    default="userspace",
    show_default=True,
    help="Lab link engine.",
)
@click.option(
    "--record",
    "record_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Save each scenario's subject samples here (engine test fixtures).",
)
@result_options("diagnose")
def diagnose(
    quick: bool,
    window: float,
    only: tuple[str, ...],
    engine: str,
    record_dir: Path | None,
    out: Path | None,
    as_json: bool,
) -> None:
    """Build a lab scenario per verdict, run diagnose, print the confusion matrix."""
    from netdiag.bench import diagnose as bench

    if not 0.5 <= window <= 60:
        raise InputError(f"--window {window:g} must be 0.5-60 s", "e.g. --window 3")
    err = Console(stderr=True)
    res, outcomes = bench.run(
        quick=quick,
        window_s=window,
        only=only,
        engine=engine,
        record_dir=record_dir,
        progress=lambda m: err.print(m, highlight=False),
    )
    if not outcomes:
        raise InputError(f"no scenario matches --only {' '.join(only)}", "see the names in docs")
    doc = res.to_dict()
    acc = doc["summary"]["accuracy"][0]
    line = (
        f"accuracy {acc['correct']}/{acc['scenarios']} = {acc['accuracy']:.0%}; "
        f"real limits called path-limited: {acc['real_limit_called_path_limited']}"
    )
    finish(res, out, as_json, table=Group(matrix_table(bench.confusion(outcomes)), line))


def matrix_table(m: dict[str, dict[str, int]]) -> Table:
    t = Table(title="expected (rows) × diagnosed (columns)", box=None, header_style="bold")
    labels = [*VERDICTS, "none"]
    t.add_column("expected")
    for lab in labels:
        t.add_column(ABBREV[lab], justify="right")
    for exp, row in m.items():
        if not any(row.values()):
            continue
        t.add_row(
            exp,
            *[
                (f"[green]{row[x]}[/]" if x == exp else str(row[x])) if row[x] else "."
                for x in labels
            ],
        )
    t.caption = "  ".join(f"{ABBREV[v]}={v}" for v in VERDICTS)
    return t
