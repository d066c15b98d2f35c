"""Join probe rows with sock_diag by socket cookie: the kernel's raw minimum RTT
(tcpi_min_rtt, a windowed minimum of RTT samples) and the congestion control, which the
tracepoints do not carry (tcp_probe has only the smoothed RTT)."""

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
