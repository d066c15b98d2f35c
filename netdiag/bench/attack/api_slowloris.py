"""Slowloris that keeps its connections: ``CONNS`` API connections from the attacker's address,
each sending its request header one byte every ``DRIP_S``, reopened as soon as the node closes
one (at most ``REOPEN_PER_S``), for ``--duration``.

The header timeout closes each connection after ``api_header_timeout_s`` (10 s), but an
attacker that reopens them holds as many as it likes at every moment: before the API had a
connection limit the node held all of them — a file descriptor (shared with the P2P side, one
process limit) and a parser's state each. ``slowloris`` (200 connections, opened once) shows the
header timeout; this one the limit.

Defended: the node's API sockets from the attacker (sock_diag, ESTABLISHED on the node's side)
never exceed ``API_MAX`` (the node's ``api_max_connections`` default) plus ``SLACK`` (accepted,
not yet evicted), and ``/status`` from an honest client (another address) answered every
time. Not defended on either failing. Inconclusive (an error) when sock_diag never answered.
``--quick`` opens ``QUICK_CONNS`` for ``--duration`` and is judged the same way.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import time

from netdiag.bench.attack.base import AttackContext, Figure, Outcome
from netdiag.bench.attack.cluster import http_json
from netdiag.errors import NetdiagError
from netdiag.measure import sockdiag

CONNS = 1000
QUICK_CONNS = 150  # past the limit too
API_MAX = 64  # the node's api_max_connections default (docs/node.md, REST API)
SLACK = 8
DRIP_S = 2.0
REOPEN_PER_S = 200.0
SAMPLE_S = 0.5
HEADER = b"GET /status HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 4096


def node_conns(port: int, ip: str) -> int | None:
    """The node's established API sockets to ``ip`` (sock_diag); None when it does not answer."""
    try:
        conns = sockdiag.snapshot(ports=[port])
    except (OSError, NetdiagError):
        return None
    return sum(1 for c in conns if c.lport == port and c.raddr == ip and c.state == "ESTABLISHED")


def fds(pid: int | None) -> int | None:
    if pid is None:
        return None
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


class ApiSlowloris:
    name = "api_slowloris"
    summary = "API connections dribbling a header, reopened when closed: held to the limit"
    rss_bound: float | None = 1.25
    growth_bound: float | None = 0.9

    def run(self, ctx: AttackContext) -> Outcome:
        node = ctx.cluster.nodes[ctx.target_index]
        port = node.api_port
        pid = node.proc.pid if node.proc is not None else None
        n = QUICK_CONNS if ctx.quick else CONNS
        fds_before = fds(pid)
        socks: dict[socket.socket, int] = {}  # -> bytes of the header sent
        opened = closed_by_node = connect_failed = 0
        peak: int | None = None
        fds_peak = fds_before
        status_ok = status_failed = 0
        status_worst = 0.0
        start = time.monotonic()
        end = start + ctx.duration_s
        next_drip = next_sample = start
        budget = 0.0
        last = start
        try:
            while (now := time.monotonic()) < end:
                budget = min(REOPEN_PER_S, budget + (now - last) * REOPEN_PER_S)
                last = now
                while len(socks) < n and budget >= 1:
                    budget -= 1
                    s = socket.socket()
                    s.setblocking(False)
                    try:
                        s.bind((ctx.source_ip, 0))
                        s.connect_ex(("127.0.0.1", port))
                    except OSError:
                        s.close()
                        connect_failed += 1
                        continue
                    socks[s] = 0
                    opened += 1
                if now >= next_drip:
                    next_drip = now + DRIP_S
                    for s, sent in list(socks.items()):
                        try:
                            if s.recv(1, socket.MSG_PEEK) == b"":
                                raise ConnectionResetError
                        except BlockingIOError:
                            pass
                        except OSError as e:
                            if e.errno == errno.ENOTCONN:
                                continue  # still connecting
                            closed_by_node += 1
                            del socks[s]
                            s.close()
                            continue
                        with contextlib.suppress(BlockingIOError, OSError):
                            socks[s] = sent + s.send(HEADER[sent : sent + 1] or b"a")
                if now >= next_sample:
                    next_sample = now + SAMPLE_S
                    held = node_conns(port, ctx.source_ip)
                    if held is not None:
                        peak = max(peak or 0, held)
                    f = fds(pid)
                    if f is not None:
                        fds_peak = max(fds_peak or 0, f)
                    t0 = time.monotonic()
                    ok = http_json(port, "/status", timeout_s=2.0) is not None
                    status_worst = max(status_worst, time.monotonic() - t0)
                    status_ok += ok
                    status_failed += not ok
                    ctx.progress(
                        f"{len(socks)} open, node holds {held} for us (peak {peak}), "
                        f"{closed_by_node} closed by the node, /status ok {status_ok}"
                    )
                time.sleep(0.01)
        finally:
            for s in socks:
                s.close()
        figures: dict[str, Figure] = {
            "connections_kept": n,
            "opened": opened,
            "closed_by_node": closed_by_node,
            "connect_failed": connect_failed,
            "node_held_peak": peak,
            "node_fds_before": fds_before,
            "node_fds_peak": fds_peak,
            "status_ok": status_ok,
            "status_failed": status_failed,
            "status_worst_ms": round(status_worst * 1000, 1),
        }
        why = (
            f"{opened} slow connections opened ({n} kept open), the node held at most {peak} "
            f"of them (bound {API_MAX} + {SLACK}), fds {fds_before} -> peak {fds_peak}; "
            f"/status answered {status_ok}/{status_ok + status_failed}"
        )
        fails = []
        if peak is not None and peak > API_MAX + SLACK:
            fails.append(f"the node held {peak} of our connections")
        if status_failed:
            fails.append(f"/status failed {status_failed} times")
        if fails:
            return Outcome(defended=False, why="; ".join(fails) + f" — {why}", figures=figures)
        if peak is None:
            return Outcome(
                error=f"the node's side was never seen (sock_diag): {why}", figures=figures
            )
        return Outcome(defended=True, why=why, figures=figures)


ATTACK = ApiSlowloris()
