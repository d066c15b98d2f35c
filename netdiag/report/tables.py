"""Summary tables of result files, and the side-by-side join of two runs — renderer-neutral.

A summary row's string (and bool) columns are its key; numeric columns are figures. Comparing
two runs joins rows with equal keys and adds the ratio B/A of each figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Scalar = str | int | float | bool | None


@dataclass(frozen=True)
class Table:
    title: str
    columns: list[str]
    rows: list[list[Scalar]]


def _is_key(v: Scalar) -> bool:
    return isinstance(v, str | bool)


def _columns(rows: Sequence[Mapping[str, Scalar]]) -> list[str]:
    cols: list[str] = []
    for r in rows:
        cols.extend(c for c in r if c not in cols)
    return cols


def summary_tables(doc: Mapping[str, Any]) -> list[Table]:
    out = []
    for name, rows in doc.get("summary", {}).items():
        if not rows:
            continue
        cols = _columns(rows)
        out.append(Table(name, cols, [[r.get(c) for c in cols] for r in rows]))
    return out


def key_columns(rows: Sequence[Mapping[str, Scalar]]) -> list[str]:
    cols = _columns(rows)
    return [c for c in cols if any(_is_key(r.get(c)) for r in rows)]


def compare_tables(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[Table]:
    """One table per summary table of either run: key columns, figure name, A, B, B/A."""
    out = []
    sa, sb = a.get("summary", {}), b.get("summary", {})
    for name in [*sa, *(n for n in sb if n not in sa)]:
        ra, rb = sa.get(name, []), sb.get(name, [])
        if not ra and not rb:
            continue
        keys = key_columns([*ra, *rb])
        figures = [c for c in _columns([*ra, *rb]) if c not in keys]

        def key_of(r: Mapping[str, Scalar], keys: list[str] = keys) -> tuple[Scalar, ...]:
            return tuple(r.get(k) for k in keys)

        index_b = {key_of(r): r for r in rb}
        ordered = [key_of(r) for r in ra] + [k for k in index_b if k not in {key_of(r) for r in ra}]
        index_a = {key_of(r): r for r in ra}
        # long format (one line per figure) so that two runs fit the terminal's 100 columns
        cols = [*keys, "figure", "A", "B", "B/A"]
        body: list[list[Scalar]] = []
        for k in ordered:
            for f in figures:
                va = index_a.get(k, {}).get(f)
                vb = index_b.get(k, {}).get(f)
                if va is None and vb is None:
                    continue
                body.append([*k, f, va, vb, ratio(va, vb)])
        out.append(Table(f"{name} (A vs B)", cols, body))
    return out


def ratio(a: Scalar, b: Scalar) -> float | None:
    if isinstance(a, bool) or isinstance(b, bool):
        return None
    if isinstance(a, int | float) and isinstance(b, int | float) and a != 0:
        return float(b) / float(a)
    return None


def fmt(v: Scalar) -> str:
    """Numbers at a readable precision; null as an em dash."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        a = abs(v)
        if a == 0:
            return "0"
        if a >= 1e5:
            return f"{v:,.0f}"
        if a >= 100:
            return f"{v:.1f}"
        if a >= 1:
            return f"{v:.2f}"
        return f"{v:.3g}"
    return str(v)


def fmt_meta(v: Any) -> str:
    """A metadata value for people: no Python reprs (None, lists, dicts)."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, list | tuple):
        return ", ".join(fmt_meta(x) for x in v) or "—"
    if isinstance(v, Mapping):
        return ", ".join(f"{k}={fmt_meta(x)}" for k, x in v.items()) or "—"
    if isinstance(v, float):
        return fmt(v)
    return str(v)


def metadata_rows(doc: Mapping[str, Any]) -> list[tuple[str, str]]:
    m = doc["metadata"]
    out = [
        (k, fmt_meta(m[k]))
        for k in (
            "benchmark",
            "start_time",
            "host",
            "kernel",
            "link_engine",
            "seed",
            "variants",
            "netdiag_version",
            "command",
            "converted_from",
        )
        if k in m
    ]
    params = m.get("parameters", {})
    out += [(f"parameters.{k}", fmt_meta(v)) for k, v in params.items()]
    return out


LOAD_TOLERANCE = 0.02  # a variant's load may differ from the plan (or another's) by this share


def load_warnings(runs: Sequence[tuple[str, Mapping[str, Any]]]) -> list[str]:
    """Where the load was not what was planned, or not the same across compared variants (in
    one file or across two), by more than 2 %, from summary rows with `txs_planned`:
    - a variant whose offered load (`txs_offered`, POSTs started in their slot) fell short of
      (or exceeded) the plan;
    - compared variants whose achieved share (`txs_sent` accepted / planned) differs.
    Either way a comparison of their figures is not like for like."""
    seen: list[tuple[str, int, int | None, int]] = []  # name, planned, offered, accepted
    for label, doc in runs:
        for rows in doc.get("summary", {}).values():
            for r in rows:
                planned, sent = r.get("txs_planned"), r.get("txs_sent")
                if isinstance(planned, int | float) and isinstance(sent, int | float) and planned:
                    name = " ".join(str(x) for x in (label, r.get("variant")) if x) or "run"
                    offered = r.get("txs_offered")
                    off = int(offered) if isinstance(offered, int | float) else None
                    seen.append((name, int(planned), off, int(sent)))
    out = []
    short = [(n, p, o) for n, p, o, _ in seen if o is not None and abs(o - p) > LOAD_TOLERANCE * p]
    if short:
        detail = ", ".join(
            f"{n} offered {o} of {p} planned ({(o - p) / p:+.1%})" for n, p, o in short
        )
        out.append(
            f"the load generator did not keep its planned rate ({detail}): those figures were "
            "measured under a different load; rerun with a lower --tx-rate or on a quieter host"
        )
    shares = [s / p for _, p, _, s in seen]
    if len(seen) >= 2 and max(shares) - min(shares) > LOAD_TOLERANCE * max(shares):
        detail = ", ".join(f"{n} sent {s} of {p} planned" for n, p, _, s in seen)
        out.append(
            f"offered load differed between the compared variants ({detail}): the nodes "
            "accepted different loads; compare their figures with care or rerun with a "
            "lower --tx-rate"
        )
    return out
