"""Slowloris on the REST API: many connections that send a request header one byte at a time.

A defended API closes a connection whose request header has not arrived within its header
timeout, and keeps answering /status to others meanwhile.
"""

from __future__ import annotations

import contextlib
import socket
import time

from netdiag.bench.attack.base import AttackContext, Outcome
from netdiag.bench.attack.cluster import http_json

HEADER = b"GET /status HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 4096


class Slowloris:
    name = "slowloris"
    summary = "API connections dribbling a header: closed by the header timeout, API answers"
    rss_bound: float | None = None
    growth_bound: float | None = None

    def __init__(self, connections: int = 200) -> None:
        self.connections = connections

    def run(self, ctx: AttackContext) -> Outcome:
        port = ctx.cluster.nodes[ctx.target_index].api_port
        n = 50 if ctx.quick else self.connections
        socks: list[socket.socket] = []
        for _ in range(n):
            s = socket.socket()
            try:
                s.bind((ctx.source_ip, 0))
                s.settimeout(2.0)
                s.connect(("127.0.0.1", port))
                s.setblocking(False)
                socks.append(s)
            except OSError:
                s.close()
        open_at = time.monotonic()
        closed_after: list[float] = []
        status_ok = status_failed = 0
        status_worst = 0.0
        pos = 0
        end = open_at + ctx.duration_s
        while time.monotonic() < end:
            pos = min(pos + 1, len(HEADER))
            for s in list(socks):
                try:
                    s.send(HEADER[pos - 1 : pos])
                    if s.recv(4096, socket.MSG_PEEK) == b"":
                        raise ConnectionResetError
                except BlockingIOError:
                    pass
                except OSError:
                    closed_after.append(time.monotonic() - open_at)
                    socks.remove(s)
                    s.close()
            t0 = time.monotonic()
            ok = http_json(port, "/status", timeout_s=2.0) is not None
            status_worst = max(status_worst, time.monotonic() - t0)
            status_ok += ok
            status_failed += not ok
            ctx.progress(f"{len(socks)}/{n} slow connections still open, /status ok {status_ok}")
            time.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))
        still_open = len(socks)
        for s in socks:
            with contextlib.suppress(OSError):
                s.close()
        closed = len(closed_after)
        defended = closed >= 0.9 * n and status_failed == 0
        return Outcome(
            defended=defended,
            why=f"{closed}/{n} slow connections closed by the API within {ctx.duration_s:g} s"
            + (f" (last after {max(closed_after):.1f} s)" if closed_after else "")
            + f"; /status answered {status_ok}/{status_ok + status_failed}",
            figures={
                "slow_connections": n,
                "closed_by_api": closed,
                "still_open_at_end": still_open,
                "closed_after_max_s": round(max(closed_after), 2) if closed_after else None,
                "status_ok": status_ok,
                "status_failed": status_failed,
                "status_worst_ms": round(status_worst * 1000, 1),
            },
        )


ATTACK = Slowloris()
