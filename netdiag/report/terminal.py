"""The terminal summary: rich tables of a run's summary (or of two runs side by side)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table as RichTable

from netdiag.report.tables import Table, fmt, fmt_meta


def print_tables(console: Console, tables: Sequence[Table], max_columns: int = 6) -> None:
    """Narrow tables as they are; wide ones turned (one line per figure, one column per row)."""
    for t in tables:
        rt = RichTable(title=t.title, box=box.SIMPLE_HEAVY, title_justify="left")
        if len(t.columns) <= max_columns or len(t.rows) > 8:
            for c in t.columns:
                i = t.columns.index(c)
                numeric = any(isinstance(r[i], int | float) for r in t.rows)
                rt.add_column(c, justify="right" if numeric else "left")
            for row in t.rows:
                rt.add_row(*(fmt(v) for v in row))
        else:
            keys = [
                i for i, c in enumerate(t.columns) if any(isinstance(r[i], str) for r in t.rows)
            ]
            rt.add_column("")
            for row in t.rows:
                rt.add_column(" ".join(str(row[i]) for i in keys) or "value", justify="right")
            for i, c in enumerate(t.columns):
                if i not in keys:
                    rt.add_row(c, *(fmt(row[i]) for row in t.rows))
        console.print(rt)


def print_header(console: Console, label: str, doc: Mapping[str, Any]) -> None:
    m = doc["metadata"]
    params = m.get("parameters", {})
    shown = ", ".join(f"{k}={fmt_meta(v)}" for k, v in list(params.items())[:8])
    facts = [
        str(m.get("benchmark")),
        str(m.get("start_time")),
        f"kernel {m.get('kernel')}",
        *([f"engine {m['link_engine']}"] if m.get("link_engine") else []),
        *([f"seed {m['seed']}"] if m.get("seed") is not None else []),
    ]
    console.print(f"[bold]{label}[/] " + " · ".join(facts) + f"\n  {shown}")


def print_warnings(console: Console, warnings: Sequence[str]) -> None:
    for w in warnings:
        console.print(f"[yellow]warning:[/] {w}")
