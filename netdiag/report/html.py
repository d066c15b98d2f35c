"""A self-contained HTML page: metadata, summary tables, plots embedded as base64 PNG."""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from typing import Any

from netdiag.report.plots import Plot
from netdiag.report.tables import Table, fmt, load_warnings, metadata_rows

CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.5em} h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3} td.k,th.k{text-align:left}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}
.meta td{text-align:left;font-family:monospace} .warn{color:#a15c00;font-weight:bold}
"""


def _table(t: Table) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in t.columns)
    body = []
    for row in t.rows:
        cells = "".join(
            f'<td class="k">{html.escape(fmt(v))}</td>'
            if isinstance(v, str)
            else f"<td>{html.escape(fmt(v))}</td>"
            for v in row
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<h3>{html.escape(t.title)}</h3><table><tr>{head}</tr>{''.join(body)}</table>"


def _meta(label: str, doc: Mapping[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>"
        for k, v in metadata_rows(doc)
    )
    return f"<h3>{html.escape(label or 'run')}</h3><table class='meta'>{rows}</table>"


def page(
    runs: Sequence[tuple[str, Mapping[str, Any]]], tables: Sequence[Table], plots: Sequence[Plot]
) -> str:
    bench = runs[0][1]["metadata"].get("benchmark", "bench")
    title = f"netdiag {bench} report" + (" — comparison" if len(runs) > 1 else "")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        *(f"<p class='warn'>warning: {html.escape(w)}</p>" for w in load_warnings(runs)),
        "<h2>Summary</h2>",
        *(_table(t) for t in tables),
    ]
    if not tables:
        parts.append("<p>This result file has no summary tables.</p>")
    parts.append("<h2>Plots</h2>")
    for p in plots:
        data = base64.b64encode(p.png).decode()
        parts.append(
            f"<h3>{html.escape(p.title)}</h3>"
            f"<img alt='{html.escape(p.name)}' src='data:image/png;base64,{data}'>"
        )
    if not plots:
        parts.append("<p>No plottable series in this result file.</p>")
    parts.append("<h2>Runs</h2>")
    parts += [_meta(label, doc) for label, doc in runs]
    parts.append("</body></html>\n")
    return "".join(parts)
