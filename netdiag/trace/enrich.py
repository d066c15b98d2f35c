"""Joins onto tcp_peers rows: sock_diag by socket cookie (the kernel's raw minimum RTT,
tcpi_min_rtt, and the congestion control, which tcp_probe does not carry — it has only the
smoothed RTT), and tcp_cong by 4-tuple (time in loss recovery)."""

from __future__ import annotations

from collections.abc import Iterable

from netdiag.measure.sockdiag import TcpConn
from netdiag.trace.decode import Row


def join_tcp_info(rows: list[Row], conns: Iterable[TcpConn]) -> int:
    """Add `min_rtt_us` and `cc` to rows whose cookie sock_diag knows; returns the count."""
    by_cookie = {c.cookie: c for c in conns}
    n = 0
    for r in rows:
        c = by_cookie.get(int(r.get("sock_cookie") or 0))
        if c is None or c.info is None:
            continue
        r["min_rtt_us"] = c.info.min_rtt_us or None
        r["cc"] = c.cc
        n += 1
    return n


def _tuple(r: Row) -> tuple[object, ...]:
    return (r.get("laddr"), r.get("lport"), r.get("raddr"), r.get("rport"))


def join_cong(rows: list[Row], cong_rows: Iterable[Row]) -> int:
    """Add tcp_cong's congestion state and time in loss recovery to tcp_peers rows.

    tcp:tcp_cong_state_set carries no sock_cookie, so the join is by 4-tuple (unique among
    live sockets of a namespace). Rows without a match have never left Open since attach."""
    by_tuple = {_tuple(c): c for c in cong_rows}
    n = 0
    for r in rows:
        c = by_tuple.get(_tuple(r))
        if c is None:
            continue
        t = c.get("time_ms") or {}
        e = c.get("enters") or {}
        r["ca_state"] = c.get("ca_state")
        r["recovery_ms"] = round(float(t.get("Recovery", 0.0)), 1)
        r["loss_ms"] = round(float(t.get("Loss", 0.0)), 1)
        r["recoveries"] = int(e.get("Recovery", 0)) + int(e.get("Loss", 0))
        n += 1
    return n
