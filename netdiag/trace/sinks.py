"""Where snapshots go: a rich table (top-like), NDJSON lines, Prometheus exposition."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from rich.table import Table

from netdiag.output import json_line
from netdiag.trace.decode import Row
from netdiag.trace.engine import Snapshot

INFINITE_SSTHRESH = 2147483647


# column -> (header, formatter). Headers carry units; everything fits 100 columns.
def _us_ms(v: Any) -> str:
    return "-" if v is None else f"{v / 1000:.2f}"


def _bps(v: Any) -> str:
    if v is None:
        return "-"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if v >= div:
            return f"{v / div:.1f}{unit}"
    return f"{v:.0f}"


def _num(v: Any) -> str:
    if v is None:
        return "-"
    if v == INFINITE_SSTHRESH:
        return "inf"
    if isinstance(v, float):
        return f"{v:.1f}"
    return str(v)


def _age(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.0f}s" if v < 3600 else f"{v / 3600:.1f}h"


SHORT_STATES = {
    "ESTABLISHED": "ESTAB",
    "SYN_SENT": "SYN-SENT",
    "SYN_RECV": "SYN-RECV",
    "FIN_WAIT1": "FIN-WAIT-1",
    "FIN_WAIT2": "FIN-WAIT-2",
    "TIME_WAIT": "TIME-WAIT",
    "CLOSE_WAIT": "CLOSE-WAIT",
    "LAST_ACK": "LAST-ACK",
    "NEW_SYN_RECV": "SYN-RECV",
}


def _mesh(v: Any) -> str:
    """The node reports mesh membership as a list of topics (or a bool)."""
    if v is None:
        return "-"
    if isinstance(v, list | tuple):
        return "yes" if v else "no"
    return "yes" if v is True else "no" if v is False else str(v)[:6]


def _state(v: Any) -> str:
    return SHORT_STATES.get(str(v), str(v))[:10]


COLUMNS: dict[str, tuple[str, Any]] = {
    "peer": ("PEER", str),
    "peer_id": ("PEER ID", lambda v: "-" if v is None else str(v)[:12]),
    "mesh": ("MESH", _mesh),
    "state": ("STATE", _state),
    "min_rtt_us": ("MINRTT", _us_ms),
    "srtt_min_us": ("MIN SRTT", _us_ms),
    "srtt_us": ("SRTT", _us_ms),
    "srtt_mean_us": ("MEAN", _us_ms),
    "srtt_p90_us": ("P90", _us_ms),
    "snd_cwnd": ("CWND", _num),
    "ssthresh": ("SSTH", _num),
    "acked_bps": ("ACKED b/s", _bps),
    "retrans": ("RETX", _num),
    "recovery_ms": ("RECOV ms", _num),
    "loss_ms": ("LOSS ms", _num),
    "age_s": ("AGE", _age),
    "accept_queue": ("ACCEPTQ", _num),
    "accept_backlog": ("BACKLOG", _num),
    "listen_drops": ("LDROPS", _num),
    "verdict": ("VERDICT", lambda v: "-" if v is None else str(v)),
    "lat_p50_us": ("P50 ms", _us_ms),
    "lat_max_us": ("MAX ms", _us_ms),
    "lat_mean_us": ("MEAN ms", _us_ms),
    "duration_us": ("DUR ms", _us_ms),
    "raddr": ("PEER", str),
    "comm": ("COMM", lambda v: "-" if v is None else str(v)),
    "established": ("ESTAB", _num),
    "bytes_sent": ("TX bytes", _num),
    "bytes_received": ("RX bytes", _num),
}


ABBREV = {
    "Open": "OPEN",
    "Disorder": "DISORD",
    "Recovery": "RECOV",
    "ca_state": "CA",
    "count_per_s": "PER S",
    "location": "WHERE",
    "socket": "SK",
}


TEXT_COLUMNS = {
    "peer",
    "state",
    "peer_id",
    "mesh",
    "reason",
    "protocol",
    "location",
    "ca_state",
    "verdict",
    "comm",
    "direction",
    "raddr",
    "close_state",
}


def header_for(col: str) -> str:
    """Column header; `base.member` columns (enum arrays) get short names with the unit."""
    if col in COLUMNS:
        return COLUMNS[col][0]
    if "." in col:
        base, member = col.split(".", 1)
        name = ABBREV.get(member, member.upper())
        if base.endswith("_ms"):
            return f"{name} ms"
        return f"#{name}"
    return ABBREV.get(col, col.upper())


def cell(col: str, row: Row) -> str:
    if "." in col:  # enum_array member, e.g. time_ms.Recovery
        base, member = col.split(".", 1)
        v = (row.get(base) or {}).get(member)
        return _num(round(v, 1) if isinstance(v, float) else v)
    v = row.get(col)
    if col == "min_rtt_us" and v is None:  # socket outside sock_diag's namespace: the probe's
        v = row.get("srtt_min_us")
    fmt = COLUMNS.get(col, (None, _num))[1]
    if col == "age_s" and v is not None and row.get("age_exact") is False:
        return f"≥{fmt(v)}"  # older than the probe: the kernel does not say how much
    return str(fmt(v))


def sort_rows(rows: list[Row], key: str, reverse: bool = True) -> list[Row]:
    """Rows by one column (`base.member` for enum arrays); rows without a value go last."""

    def val(r: Row) -> Any:
        if "." in key:
            base, member = key.split(".", 1)
            return (r.get(base) or {}).get(member)
        return r.get(key)

    have = [r for r in rows if val(r) is not None]
    missing = [r for r in rows if val(r) is None]
    numeric = all(isinstance(val(r), int | float) for r in have)
    have.sort(key=lambda r: val(r) if numeric else str(val(r)), reverse=reverse)
    return have + missing


def table(
    snap: Snapshot,
    columns: Sequence[str],
    title: str,
    overhead: str | None,
    limit: int = 40,
    extra: dict[str, Any] | None = None,
) -> Table:
    rtt = "times in ms · " if any(c.endswith("_us") for c in columns) else ""
    cap = (
        f"{rtt}{len(snap.rows)} rows · {snap.events_per_s:,.0f} events/s · "
        f"lost {snap.lost} · source {snap.source}"
    )
    if overhead:
        cap += f" · {overhead}"
    x = extra or {}
    if "listen_overflows_total" in x:
        cap += (
            f"\nnamespace ListenOverflows {x['listen_overflows_total']} "
            f"(+{x['listen_overflows_delta']}), ListenDrops {x['listen_drops_total']} "
            f"(+{x['listen_drops_delta']})"
        )
    for n in snap.notes:
        cap += f"\n{n}"
    t = Table(
        title=title,
        caption=cap,
        box=None,
        header_style="bold",
        pad_edge=False,
        caption_justify="left",
    )
    for c in columns:
        t.add_column(
            header_for(c),
            justify="left" if c in TEXT_COLUMNS else "right",
            no_wrap=True,
        )
    for r in snap.rows[:limit]:
        t.add_row(*(cell(c, r) for c in columns))
    return t


def _jsonable(row: Row) -> Row:
    return {k: v for k, v in row.items()}


def ndjson_line(snap: Snapshot, extra: dict[str, Any] | None = None) -> str:
    obj = {
        **snap.header(),
        **(extra or {}),
        "notes": snap.notes,
        "rows": [_jsonable(r) for r in snap.rows],
    }
    return json_line(obj)


def visible(rows: Iterable[Row], columns: Sequence[str]) -> list[list[str]]:
    return [[cell(c, r) for c in columns] for r in rows]
