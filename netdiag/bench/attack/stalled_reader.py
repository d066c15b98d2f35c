"""Stalled reader: authenticated peers ask once for a few MB of blocks, then never read.
The ``small`` variant (``stalled_small``, issue 17) asks for less than the kernel takes; the
``goodbye`` variant (``stalled_goodbye``) asks as little, then says goodbye (a graceful close).

Each of ``PEERS`` peers completes the handshake, stops reading, sends one batch of
``GetBlocks(0, 128)`` worth the kernel's send buffer (tcp_wmem max, 4 MiB here) plus ~4 MB of
answers, so ~4 MB waits in the node (well under its 16 MiB per-peer write cap), and stays
silent. The
cap never trips, so only the node's write-stall check (``write_stall_timeout_s``, 10 s without
a byte acknowledged) can end these sessions. The request is sized to the chain: one answer is
measured first by a peer that reads (waiting a little for the chain to grow if it is short).

Defended (full run): every session is ended by the node (the attacker's socket leaves
ESTABLISHED: the cut is a reset) within the stall timeout plus ``MARGIN_S`` of its last
request, and the target's ``limit_hits{limit="write_stall"}`` rose by at least the number of
sessions while ``write_buffer`` did not: the row proves the stall check, not the cap, cut them.
RSS and growth are judged by the runner. ``--quick`` watches only ``--duration`` after the
requests (no verdict of its own).

Small asks (``stalled_small``): each peer asks for half the kernel's send buffer (``tcp_wmem``
max: 2 MiB here) only, less than the node's socket takes at once on loopback (its send buffer,
autotuned, is reported from sock_diag; the peer's own window takes some too), so nothing ever
waits in the node: the answers sit unacknowledged in the node's kernel send queue, where a
stall check that watched only the node's own buffers never looked (before issue 17's fix only
the 60 s idle timeout ended such a session, and its graceful close left the queue to the kernel
as an orphan). Judged the same way. Both variants also watch the node's side in sock_diag: the
bytes its sockets to the attacker hold in the kernel (peak, and at the end of the watch) and
how many of those sockets are left then — a defended node has freed them all.

Goodbye (``stalled_goodbye``): the small ask, then, ``GOODBYE_AFTER_S`` later, a Disconnect
("bye"): the node closes gracefully, asyncio has nothing left to send and closes the fd, and the
kernel keeps the socket as an orphan (FIN-WAIT-1) holding the answers — for as long as the peer
answers zero-window probes, i.e. for ever (before the close set TCP_USER_TIMEOUT), outside the
node's connection slots and memory budget, so the peer can reconnect and do it again. Defended
when the node's kernel has freed every such socket by the end of the watch (sock_diag; the
attacker sees nothing: the kernel aborts an orphan without a reset).

Every mode is inconclusive (an error, defended null), not defended, when it tested nothing:
sock_diag never showed the node's side, or more than ``MAX_NEVER_HELD`` of the node's sockets
never held output for us (then a node with no stall check at all would pass).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import socket
import ssl
import statistics
from dataclasses import dataclass, field
from typing import cast

from netdiag.bench.attack.base import AsyncAttack, AttackContext, Figure, Outcome
from netdiag.bench.attack.cluster import http_text
from netdiag.bench.attack.wire import AttackKey, Refused, Target, WirePeer, end_all, frame
from netdiag.errors import NetdiagError
from netdiag.measure import sockdiag

PEERS = 8
MODES = ("stock", "small", "goodbye")
GOODBYE_AFTER_S = 3.0  # the node has written every answer by then (the kernel took them)
STALL_RCVBUF = 16 << 10  # our receive buffer while stalled (the kernel doubles it)
SMALL_SHARE = 2  # small asks: each peer asks for the kernel's send buffer (max) / this
WAITING_BYTES = 4 << 20  # what should wait in the node per peer: well under the 16 MiB cap
MIN_WAITING = 2 << 20  # asked beyond the kernel's buffers, at the least
MAX_REQUESTS = 4000  # per peer; with a short chain the attack waits for it to grow
STALL_S = 10.0  # the node's write_stall_timeout_s default (docs/node.md, limits)
MARGIN_S = 10.0  # timer granularity (timeout/4), the last acks, a loaded host
WATCH_S = STALL_S + MARGIN_S + 5.0  # how long a session is watched after its last request
GROW_WAIT_S = 40.0  # at most this long waiting for a chain long enough to size the request
CONNECT_S = 30.0  # at most this long to open all sessions (per-IP connection rate)
# sessions whose node socket may never have held output (our side took all of it) before the
# run is inconclusive: seen once in 7 runs on the fix; more means the attack did not make the
# node hold anything, so a node with no stall check at all would pass
MAX_NEVER_HELD = 1
TCP_ESTABLISHED = 1
METRIC = "netdiag_node_limit_hits_total"


def kernel_sndbuf_max() -> int:
    """What the kernel's send buffer can take before output waits in the node (tcp_wmem max,
    autotuned up to it; measured: a first version asking 4.2 MB had it all taken by the kernel
    for 2 of 8 peers, so nothing waited in the node and the stall check rightly saw nothing)."""
    try:
        with open("/proc/sys/net/ipv4/tcp_wmem") as f:
            return int(f.read().split()[2])
    except (OSError, ValueError, IndexError):
        return 4 << 20


def limit_hits(metrics: str | None, limit: str) -> float | None:
    """``limit_hits{limit=...}`` from the node's Prometheus text (0 if never hit; None: no text)."""
    if metrics is None:
        return None
    pat = re.compile(rf'^{METRIC}\{{[^}}]*limit="{re.escape(limit)}"[^}}]*\}}\s+(\S+)', re.M)
    m = pat.search(metrics)
    return float(m.group(1)) if m else 0.0


@dataclass
class Seen:
    """What the attack saw; ``assess`` turns it into the Outcome (pure: unit-tested)."""

    sessions: int = 0
    refused: int = 0
    requests_per_peer: int = 0
    answer_bytes: int = 0  # one GetBlocks(0, 128) answer, as measured
    reset_after_s: list[float] = field(default_factory=list)  # last request -> reset, per end
    stall_hits: float | None = None  # write_stall + write_slow delta on the target
    buffer_hits: float | None = None  # write_buffer delta on the target
    # the node's side (sock_diag; None: not seen): its sockets to our peers
    kernel_bytes_peak: int | None = None  # their send queues (unacked + unsent), summed, peak
    kernel_bytes_end: int | None = None  # ... at the end of the watch
    node_sockets_end: int | None = None  # how many of them still hold something then
    node_sndbuf_max: int | None = None  # the largest send buffer (tb) seen among them
    freed_after_s: list[float] = field(default_factory=list)  # last request -> node socket gone
    never_held: int = 0  # sessions whose node socket never held output when sampled
    received: int | None = None  # bytes our sockets received (tcpi_bytes_received), summed


def median_max(xs: list[float]) -> tuple[float | None, float | None]:
    return (round(statistics.median(xs), 1), round(max(xs), 1)) if xs else (None, None)


def untested(s: Seen) -> str | None:
    """Why the run tested nothing (no verdict), or None: the node's side was never seen
    (sock_diag did not answer), or too many of its sockets never held output for us."""
    if s.node_sockets_end is None:
        return "the node's sockets were never seen (sock_diag): nothing to judge"
    if s.never_held > MAX_NEVER_HELD:
        return (
            f"{s.never_held} of {s.sessions} node sockets never held output for us "
            f"(more than {MAX_NEVER_HELD}): the attack did not stall the node"
        )
    return None


def assess(s: Seen, quick: bool, mode: str = "stock") -> Outcome:
    ended = len(s.reset_after_s)
    late = [t for t in s.reset_after_s if t > STALL_S + MARGIN_S]
    figures: dict[str, Figure] = {
        "sessions": s.sessions,
        "ended_by_node": ended,
        "ended_late": len(late),
        "requests_per_peer": s.requests_per_peer,
        "asked_mb_per_peer": round(s.requests_per_peer * s.answer_bytes / 1e6, 2),
        "reset_s_median": round(statistics.median(s.reset_after_s), 1) if ended else None,
        "reset_s_max": round(max(s.reset_after_s), 1) if ended else None,
        "write_stall_hits": s.stall_hits,
        "write_buffer_hits": s.buffer_hits,
        "reconnects_refused": s.refused,
        "node_kernel_mb_peak": mb(s.kernel_bytes_peak),
        "node_kernel_mb_end": mb(s.kernel_bytes_end),
        "node_sockets_end": s.node_sockets_end,
        "node_sndbuf_mb_max": mb(s.node_sndbuf_max),
        "node_freed": len(s.freed_after_s),
        "node_freed_s_median": median_max(s.freed_after_s)[0],
        "node_freed_s_max": median_max(s.freed_after_s)[1],
        "node_never_held": s.never_held,
        "attacker_received_mb": mb(s.received),
    }
    fails: list[str] = []
    if s.sessions < PEERS:
        fails.append(f"only {s.sessions} of {PEERS} sessions opened")
    if mode == "goodbye":
        return _assess_goodbye(s, quick, figures, fails)
    # a session whose node socket never held output (our side took all of it) has nothing
    # for the node to cut; it is counted apart (node_never_held), not as a miss
    if ended < s.sessions - s.never_held:
        fails.append(f"{s.sessions - s.never_held - ended} sessions not ended by the node")
    if late:
        fails.append(f"{len(late)} ended later than {STALL_S + MARGIN_S:g} s")
    if s.stall_hits is None or s.stall_hits < s.sessions - s.never_held:
        fails.append(f"write_stall hits {s.stall_hits} < {s.sessions - s.never_held} sessions")
    if s.buffer_hits is None or s.buffer_hits > 0:
        fails.append(f"write_buffer hits {s.buffer_hits} (the cap, not the stall check)")
    if s.node_sockets_end:
        fails.append(
            f"{s.node_sockets_end} node sockets still held at the end of the watch "
            f"({figures['node_kernel_mb_end']} MB in their send queues)"
        )
    life = (
        f" {statistics.median(s.reset_after_s):.1f} s (median; max {max(s.reset_after_s):.1f} s)"
        " after the last request"
        if ended
        else ""
    )
    kernel = (
        f"; the node's kernel held {figures['node_kernel_mb_peak']} MB for them at the peak, "
        f"{figures['node_kernel_mb_end']} MB in {s.node_sockets_end} sockets at the end"
        if s.node_sockets_end is not None
        else ""
    )
    why = (
        f"{s.sessions} peers asked {figures['asked_mb_per_peer']} MB each and stopped reading; "
        f"{ended} ended by the node{life}; write_stall +{s.stall_hits}, "
        f"write_buffer +{s.buffer_hits}{kernel}"
    )
    if quick:
        return Outcome(defended=None, why=why + " (quick: not judged)", figures=figures)
    return _verdict(s, why, figures, fails)


def _assess_goodbye(s: Seen, quick: bool, figures: dict[str, Figure], fails: list[str]) -> Outcome:
    """The goodbye variant: the node closes each session gracefully at the peer's request; what
    counts is whether its kernel frees the sockets (orphans) still holding the answers."""
    if s.node_sockets_end:
        fails.append(
            f"{s.node_sockets_end} node sockets still held at the end of the watch "
            f"({figures['node_kernel_mb_end']} MB in their send queues)"
        )
    freed = (
        f"{len(s.freed_after_s)} freed by the node's kernel {figures['node_freed_s_median']} s "
        f"(median; max {figures['node_freed_s_max']} s) after the last request"
        if s.freed_after_s
        else "none freed by the node's kernel"
    )
    why = (
        f"{s.sessions} peers asked {figures['asked_mb_per_peer']} MB each, stopped reading and "
        f"said goodbye; {freed}; the node's kernel held {figures['node_kernel_mb_peak']} MB for "
        f"them at the peak, {figures['node_kernel_mb_end']} MB in {s.node_sockets_end} sockets "
        "at the end"
    )
    if quick:
        return Outcome(defended=None, why=why + " (quick: not judged)", figures=figures)
    return _verdict(s, why, figures, fails)


def _verdict(s: Seen, why: str, figures: dict[str, Figure], fails: list[str]) -> Outcome:
    """Positive evidence of failure (sockets still held, the cap hit, sessions not ended or
    not opened, ...) is "not defended" whatever else was missed; only a run where nothing
    failed and the node's side went unseen (or never held output) is inconclusive."""
    if fails:
        return Outcome(defended=False, why=why + " — " + "; ".join(fails), figures=figures)
    if (nothing := untested(s)) is not None:
        return Outcome(why=why, figures=figures, error=f"inconclusive: {nothing}")
    return Outcome(defended=True, why=why, figures=figures)


def mb(n: int | None) -> float | None:
    return None if n is None else round(n / 1e6, 2)


def node_side(port: int, peer_ports: set[int]) -> dict[int, tuple[int, int]] | None:
    """The node's sockets to ``peer_ports`` that hold output for them (sock_diag, any state but
    LISTEN and TIME-WAIT, orphans included): per peer port, its send queue (unacked + unsent
    bytes) and send buffer; None when sock_diag does not answer. A socket whose queue is empty
    holds no more than any idle socket (e.g. FIN-WAIT-2 after a close, bounded by
    tcp_fin_timeout) and is left out."""
    try:
        conns = sockdiag.snapshot(ports=[port])
    except (OSError, NetdiagError):
        return None
    return {
        c.rport: (c.wqueue, c.skmem.sndbuf if c.skmem is not None else 0)
        for c in conns
        if c.lport == port and c.rport in peer_ports and c.wqueue > 0
    }


def hold_little(peer: WirePeer) -> None:
    """Lock our receive buffer small, as an attacker who wants the node to hold the bytes
    would: with autotuning (and TLS, whose transport keeps reading up to 256 KiB while the
    application is paused) our kernel took up to a whole small ask, the node's socket
    drained, and the session was judged "not ended by the node" with nothing to end."""
    sock = peer.writer.get_extra_info("socket")
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, STALL_RCVBUF)


def tcp_received(peer: WirePeer) -> int:
    """Bytes our socket has received from the node (tcpi_bytes_received; 0 when unknown)."""
    sock = peer.writer.get_extra_info("socket")
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 136)
    except (OSError, AttributeError):
        return 0
    return int.from_bytes(raw[128:136], "little") if len(raw) >= 136 else 0


def tcp_state(peer: WirePeer) -> int | None:
    sock = peer.writer.get_extra_info("socket")
    if sock is None:
        return None
    try:
        return int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0])
    except OSError:
        return None


async def measure_answer(t: Target, source_ip: str) -> int:
    """Bytes of one GetBlocks(0, 128) answer, read by a peer that reads."""
    peer = await WirePeer.connect(t, source_ip)
    try:
        await peer.handshake(AttackKey(), t)
        await peer.send({"t": "getblocks", "req_id": 7, "start": 0, "count": 128})
        loop = asyncio.get_running_loop()
        end = loop.time() + 10.0
        while (left := end - loop.time()) > 0:
            msg = await peer.recv(left)
            if msg is None:
                break
            if msg.get("t") == "blocks" and msg.get("req_id") == 7:
                return sum(len(b) + 8 for b in msg.get("blocks", [])) + 16
            if msg.get("t") == "ping":
                await peer.send({"t": "pong", "nonce": msg["nonce"]})
        raise Refused("no answer to GetBlocks(0, 128) within 10 s")
    finally:
        await peer.aclose()


class StalledReader(AsyncAttack):
    name = "stalled_reader"
    summary = (
        "peers ask once for ~8 MB of blocks (~4 MB waits in the node, under the cap), never"
        " read: cut by the write-stall check"
    )
    rss_bound = 1.25
    growth_bound = 0.9

    def __init__(self, mode: str = "stock") -> None:
        assert mode in MODES, mode
        self.mode = mode
        if mode == "small":
            self.name = "stalled_small"
            self.summary = (
                "peers ask once for half a kernel send buffer of blocks (all taken by the node's"
                " kernel, nothing waits in the node), never read: cut by the write-stall check on"
                " the kernel's send queue"
            )
        elif mode == "goodbye":
            self.name = "stalled_goodbye"
            self.summary = (
                "peers ask once for half a kernel send buffer of blocks, never read, say goodbye:"
                " the node's kernel frees the closed sockets (no orphan kept, TCP_USER_TIMEOUT)"
            )

    async def _run(self, ctx: AttackContext) -> Outcome:
        node = ctx.cluster.nodes[ctx.target_index]
        t = ctx.cluster.target(ctx.target_index)
        loop = asyncio.get_running_loop()
        s = Seen()

        # size the request to the chain (wait for it to grow when it is short, not in quick)
        kernel = kernel_sndbuf_max()
        target_bytes, min_bytes = kernel + WAITING_BYTES, kernel + MIN_WAITING
        if self.mode != "stock":
            target_bytes = kernel // SMALL_SHARE
            min_bytes = target_bytes // 2
        grow_end = loop.time() + (0.0 if ctx.quick else GROW_WAIT_S)
        while True:
            try:
                s.answer_bytes = await measure_answer(t, ctx.source_ip)
            except (Refused, OSError, TimeoutError, ssl.SSLError) as e:
                return Outcome(error=f"could not measure a GetBlocks answer: {e}")
            if s.answer_bytes * MAX_REQUESTS >= target_bytes or loop.time() >= grow_end:
                break
            ctx.progress(f"chain short ({s.answer_bytes} B per answer): waiting for blocks")
            await asyncio.sleep(3.0)
        s.requests_per_peer = min(MAX_REQUESTS, math.ceil(target_bytes / s.answer_bytes))
        asked = s.requests_per_peer * s.answer_bytes
        if asked < min_bytes and not ctx.quick:
            return Outcome(
                error=f"chain too short: {s.requests_per_peer} answers of {s.answer_bytes} B "
                f"= {asked} B < {min_bytes} B (the kernel may buffer it all: no stall)"
            )

        metrics_before = http_text(node.api_port, "/metrics")
        watch_s = ctx.duration_s if ctx.quick else WATCH_S
        connect_end = loop.time() + CONNECT_S
        batch = b"".join(
            frame({"t": "getblocks", "req_id": k, "start": 0, "count": 128})
            for k in range(s.requests_per_peer)
        )
        peers: list[WirePeer] = []
        last_at: dict[int, float] = {}  # peer port -> its last request

        async def stall(peer: WirePeer, port: int) -> None:
            hold_little(peer)
            cast(asyncio.Transport, peer.writer.transport).pause_reading()  # never read
            try:
                await asyncio.wait_for(peer.send_raw(batch), 10.0)
            except (OSError, TimeoutError, ssl.SSLError):
                return  # could not even ask: not counted as a reset after the request
            last = last_at[port] = loop.time()
            if self.mode == "goodbye":
                await asyncio.sleep(GOODBYE_AFTER_S)
                with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
                    await asyncio.wait_for(peer.send_raw(frame({"t": "bye", "reason": "x"})), 5)
            while loop.time() - last < watch_s:
                state = tcp_state(peer)
                if state is not None and state != TCP_ESTABLISHED:
                    s.reset_after_s.append(loop.time() - last)
                    return
                await asyncio.sleep(0.1)

        tasks: list[asyncio.Task[None]] = []
        peer_ports: set[int] = set()

        freed: set[int] = set()
        held_max: dict[int, int] = {}

        def sample() -> None:
            seen = node_side(node.p2p_port, peer_ports)
            if seen is None:
                return
            queued = sum(q for q, _ in seen.values())
            s.node_sockets_end, s.kernel_bytes_end = len(seen), queued
            s.kernel_bytes_peak = max(s.kernel_bytes_peak or 0, queued)
            sndbuf = max((b for _, b in seen.values()), default=0)
            s.node_sndbuf_max = max(s.node_sndbuf_max or 0, sndbuf)
            for port, (q, _) in seen.items():
                held_max[port] = max(held_max.get(port, 0), q)
            for port, at in last_at.items():
                if held_max.get(port) and port not in seen and port not in freed:
                    freed.add(port)
                    s.freed_after_s.append(loop.time() - at)

        try:
            while len(peers) < PEERS and loop.time() < connect_end:
                try:
                    peer = await WirePeer.connect(t, ctx.source_ip)
                except (OSError, TimeoutError, ssl.SSLError):
                    s.refused += 1
                    await asyncio.sleep(0.5)
                    continue
                try:
                    await peer.handshake(AttackKey(), t)
                except (Refused, OSError, TimeoutError, ssl.SSLError):
                    s.refused += 1
                    await peer.aclose()
                    await asyncio.sleep(0.5)
                    continue
                peers.append(peer)
                port = int(peer.writer.get_extra_info("sockname")[1])
                peer_ports.add(port)
                s.sessions += 1
                tasks.append(asyncio.create_task(stall(peer, port)))
                ctx.progress(f"{s.sessions} peers asked {asked / 1e6:.1f} MB each, not reading")
            while not all(task.done() for task in tasks):
                await asyncio.sleep(0.5)
                sample()
                ctx.progress(f"{len(s.reset_after_s)} of {s.sessions} ended by the node")
            sample()  # at the end of the watch: what the node's kernel still holds for us
            s.never_held = sum(1 for port in last_at if not held_max.get(port))
            s.received = sum(tcp_received(peer) for peer in peers)
        finally:
            await end_all(tasks, peers)
        metrics_after = http_text(node.api_port, "/metrics")
        deltas: dict[str, float | None] = {}
        for limit in ("write_stall", "write_slow", "write_buffer"):
            b, a = limit_hits(metrics_before, limit), limit_hits(metrics_after, limit)
            deltas[limit] = None if a is None or b is None else a - b
        # the stall check cuts a reader that stopped (write_stall) or drips (write_slow)
        stalled, slowed = deltas["write_stall"], deltas["write_slow"]
        s.stall_hits = None if stalled is None or slowed is None else stalled + slowed
        s.buffer_hits = deltas["write_buffer"]
        return assess(s, ctx.quick, self.mode)


ATTACK = StalledReader()
