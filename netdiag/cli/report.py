"""`netdiag report RESULT.json [B.json] [--html OUT]`: summary, plots and comparison of runs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from netdiag.errors import InputError, UsageError
from netdiag.output import emit_json
from netdiag.report import html, plots, results, tables, terminal


@click.command("report")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--html",
    "html_out",
    type=click.Path(dir_okay=False),
    help="Write a self-contained HTML page (plots embedded) to this path.",
)
@click.option(
    "--png-dir",
    type=click.Path(file_okay=False),
    help="Also write each plot as NAME.png into this directory.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the summary tables as one JSON object."
)
def report(
    files: tuple[str, ...], html_out: str | None, png_dir: str | None, as_json: bool
) -> None:
    """Summarise a benchmark result file; with two files, compare them side by side (B/A)."""
    if len(files) > 2:
        raise UsageError(
            f"report takes one or two result files, got {len(files)}",
            "pass RESULT.json, or A.json B.json to compare",
        )
    for target, opt in ((html_out, "--html"), (png_dir, "--png-dir")):
        if target:
            _check_writable(Path(target), opt)  # before anything is printed
    docs = [_load(f) for f in files]
    runs = [("A", docs[0]), ("B", docs[1])] if len(docs) == 2 else [("", docs[0])]
    tabs = (
        tables.compare_tables(docs[0], docs[1])
        if len(docs) == 2
        else tables.summary_tables(docs[0])
    )
    console = Console()
    if as_json:
        out = {
            "files": list(files),
            "tables": [
                {"title": t.title, "rows": [dict(zip(t.columns, r, strict=True)) for r in t.rows]}
                for t in tabs
            ],
        }
        emit_json(out)
    else:
        for (label, doc), f in zip(runs, files, strict=True):
            terminal.print_header(console, f"{label} {f}".strip(), doc)
        terminal.print_warnings(Console(stderr=True), tables.load_warnings(runs))
        terminal.print_tables(console, tabs)
    if html_out or png_dir:
        rendered = plots.render(runs)
        if png_dir:
            d = Path(png_dir)
            d.mkdir(parents=True, exist_ok=True)
            for p in rendered:
                (d / f"{p.name}.png").write_bytes(p.png)
        if html_out:
            out_path = Path(html_out)
            out_path.parent.mkdir(parents=True, exist_ok=True)
            out_path.write_text(html.page(runs, tabs, rendered))
            if not as_json:
                console.print(f"report: {len(rendered)} plots → {out_path}")


def _check_writable(path: Path, option: str) -> None:
    """InputError unless `path` (or the nearest directory that exists above it) is writable."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe == path and path.is_file():
        ok = os.access(path, os.W_OK)
    else:
        ok = probe.is_dir() and os.access(probe, os.W_OK | os.X_OK)
    if not ok:
        raise InputError(
            f"cannot write {option} {path}: {probe} is not a writable "
            + ("file" if probe == path and path.is_file() else "directory"),
            f"give {option} a path in a directory you can write",
        )


def _load(path: str) -> dict[str, Any]:
    """A result file; a bench JSON of an older netdiag version is converted on the fly."""
    import json

    from netdiag.bench import legacy

    try:
        return results.load(path)
    except InputError:
        try:
            doc = json.loads(Path(path).read_text())
        except (OSError, ValueError):
            doc = None
        if not legacy.known(doc):
            raise
        return legacy.convert(doc, path)
