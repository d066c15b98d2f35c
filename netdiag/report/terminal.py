"""The terminal summary: rich tables of a run's summary (or of two runs side by side)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table as RichTable

from netdiag.report.tables import Table, fmt


def print_tables(console: Console, tables: Sequence[Table]) -> None:
    for t in tables:
        rt = RichTable(title=t.title, box=box.SIMPLE_HEAVY, title_justify="left")
        for c in t.columns:
            numeric = any(isinstance(r[t.columns.index(c)], int | float) for r in t.rows)
            rt.add_column(c, justify="right" if numeric else "left")
        for row in t.rows:
            rt.add_row(*(fmt(v) for v in row))
        console.print(rt)


def print_header(console: Console, label: str, doc: Mapping[str, Any]) -> None:
    m = doc["metadata"]
    params = m.get("parameters", {})
    shown = ", ".join(f"{k}={v}" for k, v in list(params.items())[:8])
    console.print(
        f"[bold]{label}[/] {m.get('benchmark')} · {m.get('start_time')} · kernel {m.get('kernel')}"
        f" · engine {m.get('link_engine')} · seed {m.get('seed')}\n  {shown}"
    )
