"""Stalled readers on the REST API: connections that pipeline requests for ``/metrics`` and
never read the answers.

Each of ``CONNS`` connections (from the attacker's own address, a 4 KiB receive buffer) sends
``REQUESTS`` pipelined ``GET /metrics`` at once and then neither reads nor writes. The answers
fill the client's window, then the node's kernel send queue, then asyncio's buffer, and the
node's handler waits to write the next one. Before the API had a write timeout nothing ended
such a connection: the header timeout runs only while the API waits for a request, so each held
its slot, a file descriptor and up to a send buffer of kernel memory (``tcp_wmem`` max, 4 MiB
here) for ever.

Defended (full run): every connection ended by the node (our socket leaves ESTABLISHED: a
reset) within the node's write timeout plus ``MARGIN_S`` of its requests, the node's kernel
holds no output for us at the end of the watch (sock_diag), the node counted its cuts
(``limit_hits`` api_write_stall / api_write_slow), and ``/status`` was answered to an honest
client throughout. Not defended on positive evidence of failure: a connection still
established at the end of the watch, one ended later than the write timeout plus ``MARGIN_S``,
output still held, a ``/status`` that failed. Inconclusive (an error, defended null) when
nothing was tested or seen: sock_diag never showed the node's side or did not answer at the
end, more than ``MAX_NEVER_HELD`` of its sockets never held output for us, or no cut counted
(``/metrics`` unread after, or 0: something else ended them). ``--quick`` watches only
``--duration`` and gives no verdict of its own.
"""

from __future__ import annotations

import contextlib
import socket
import statistics
import struct
import time
from dataclasses import dataclass, field

from netdiag.bench.attack.base import AttackContext, Figure, Outcome
from netdiag.bench.attack.cluster import http_json, http_text
from netdiag.bench.attack.stalled_reader import limit_hits, mb, node_side

CONNS = 32
QUICK_CONNS = 8
REQUESTS = 64  # pipelined GET /metrics per connection (~40 KB each on a 3-node cluster)
WRITE_TIMEOUT_S = 10.0  # the node's api_write_timeout_s default (docs/node.md, REST API)
MARGIN_S = 10.0  # the check's period (timeout/4), a loaded host
WATCH_S = WRITE_TIMEOUT_S + MARGIN_S + 5.0
MAX_NEVER_HELD = 1
SAMPLE_S = 0.5
TCP_ESTABLISHED = 1
REQUEST = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"


@dataclass
class Seen:
    conns: int = 0
    answer_bytes: int = 0
    ended_after_s: list[float] = field(default_factory=list)
    established_end: int = 0
    node_seen: bool = False
    never_held: int = 0
    kernel_bytes_peak: int = 0
    kernel_bytes_end: int | None = None
    node_sockets_end: int | None = None
    status_ok: int = 0
    status_failed: int = 0
    status_worst_s: float = 0.0
    cut_hits: float | None = None


def tcp_state(s: socket.socket) -> int | None:
    try:
        return int(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0])
    except OSError:
        return None


def assess(s: Seen, quick: bool, watch_s: float) -> Outcome:
    ended = s.ended_after_s
    med = statistics.median(ended) if ended else None
    figures: dict[str, Figure] = {
        "connections": s.conns,
        "requests_per_connection": REQUESTS,
        "answer_bytes": s.answer_bytes,
        "ended_by_node": len(ended),
        "ended_after_median_s": None if med is None else round(med, 1),
        "ended_after_max_s": round(max(ended), 1) if ended else None,
        "established_at_end": s.established_end,
        "node_kernel_mb_peak": mb(s.kernel_bytes_peak) if s.node_seen else None,
        "node_kernel_mb_end": mb(s.kernel_bytes_end),
        "node_sockets_holding_end": s.node_sockets_end,
        "node_never_held": s.never_held,
        "api_cut_hits": s.cut_hits,
        "status_ok": s.status_ok,
        "status_failed": s.status_failed,
        "status_worst_ms": round(s.status_worst_s * 1000, 1),
    }
    why = (
        f"{len(ended)}/{s.conns} stalled API connections ended by the node"
        + (f" ({med:.1f} / {max(ended):.1f} s after the requests)" if ended else "")
        + f"; node kernel held {mb(s.kernel_bytes_peak)} MB peak, "
        f"{mb(s.kernel_bytes_end)} MB at the end; /status {s.status_ok}/"
        f"{s.status_ok + s.status_failed}"
    )
    if quick:
        return Outcome(
            defended=None, why=f"quick ({watch_s:g} s watch, no verdict): {why}", figures=figures
        )
    fails = []
    if s.established_end:
        fails.append(f"{s.established_end} connections still established after {watch_s:g} s")
    late = [t for t in ended if t > WRITE_TIMEOUT_S + MARGIN_S]
    if late:
        fails.append(
            f"{len(late)} connections ended later than the write timeout + {MARGIN_S:g} s "
            f"(up to {max(late):.1f} s)"
        )
    if s.kernel_bytes_end:
        fails.append(f"node kernel still holds {s.kernel_bytes_end} B for us")
    if s.status_failed:
        fails.append(f"/status failed {s.status_failed} times")
    if fails:
        return Outcome(defended=False, why="; ".join(fails) + f" — {why}", figures=figures)
    if not s.node_seen or s.kernel_bytes_end is None:
        when = "at the end" if s.node_seen else "ever"
        return Outcome(
            error=f"the node's side was not seen (sock_diag) {when}: {why}", figures=figures
        )
    if s.never_held > MAX_NEVER_HELD:
        return Outcome(
            error=f"{s.never_held} of the node's sockets never held output for us: {why}",
            figures=figures,
        )
    if not s.cut_hits:
        return Outcome(
            error=f"the node counted no write-timeout cut (limit_hits {s.cut_hits}): {why}",
            figures=figures,
        )
    return Outcome(defended=True, why=why, figures=figures)


class ApiStalledReader:
    name = "api_stalled_reader"
    summary = "API connections pipeline GET /metrics and never read: reset by the write timeout"
    rss_bound: float | None = 1.25
    growth_bound: float | None = 0.9

    def run(self, ctx: AttackContext) -> Outcome:
        node = ctx.cluster.nodes[ctx.target_index]
        port = node.api_port
        s = Seen()
        body = http_text(port, "/metrics")
        if body is None:
            return Outcome(error="the target's /metrics did not answer")
        s.answer_bytes = len(body.encode())
        metrics_before = body
        n = QUICK_CONNS if ctx.quick else CONNS
        watch_s = ctx.duration_s if ctx.quick else WATCH_S
        socks: dict[int, socket.socket] = {}  # by our port
        for _ in range(n):
            c = socket.socket()
            try:
                c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                c.bind((ctx.source_ip, 0))
                c.settimeout(2.0)
                c.connect(("127.0.0.1", port))
                c.sendall(REQUEST * REQUESTS)
            except OSError:
                c.close()
                continue
            socks[int(c.getsockname()[1])] = c
        s.conns = len(socks)
        asked_at = time.monotonic()
        alive = dict(socks)
        held: dict[int, int] = {}
        end = asked_at + watch_s
        try:
            while time.monotonic() < end:
                seen = node_side(port, set(socks))
                queued = None
                if seen is not None:
                    s.node_seen = True
                    queued = sum(q for q, _ in seen.values())
                    s.kernel_bytes_peak = max(s.kernel_bytes_peak, queued)
                    for p, (q, _) in seen.items():
                        held[p] = max(held.get(p, 0), q)
                for p, c in list(alive.items()):
                    state = tcp_state(c)
                    if state is not None and state != TCP_ESTABLISHED:
                        s.ended_after_s.append(time.monotonic() - asked_at)
                        del alive[p]
                t0 = time.monotonic()
                ok = http_json(port, "/status", timeout_s=2.0) is not None
                s.status_worst_s = max(s.status_worst_s, time.monotonic() - t0)
                s.status_ok += ok
                s.status_failed += not ok
                ctx.progress(
                    f"{s.conns - len(alive)}/{s.conns} ended by the node, node kernel "
                    f"{mb(queued)} MB, /status ok {s.status_ok}"
                )
                time.sleep(max(0.0, SAMPLE_S - (time.monotonic() - t0)))
            seen = node_side(port, set(socks))
            if seen is not None:
                s.node_seen = True
                s.kernel_bytes_end = sum(q for q, _ in seen.values())
                s.node_sockets_end = len(seen)
            s.established_end = sum(tcp_state(c) == TCP_ESTABLISHED for c in socks.values())
            s.never_held = sum(1 for p in socks if not held.get(p))
        finally:
            for c in socks.values():
                with contextlib.suppress(OSError):  # a reset: the node keeps no orphan of ours
                    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                c.close()
        metrics_after = http_text(port, "/metrics")
        if metrics_after is not None:  # limit_hits: 0 for a limit the node never hit (or has)
            s.cut_hits = sum(
                (limit_hits(metrics_after, k) or 0.0) - (limit_hits(metrics_before, k) or 0.0)
                for k in ("api_write_stall", "api_write_slow")
            )
        return assess(s, ctx.quick, watch_s)


ATTACK = ApiStalledReader()
