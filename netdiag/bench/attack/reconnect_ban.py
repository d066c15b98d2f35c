"""Bans: one peer key breaks the protocol once per connection and reconnects, again and again.

Each session completes the handshake, then sends a second Hello (a protocol violation the node
closes on). A defended node keeps the peer's score across reconnects and bans it once the
violations add up (``max_violations``, ``ban_threshold``): later reconnects are refused.
Once refused, it reconnects ``REFUSALS`` more times back to back and reports what a refusal
costs the node (CPU, bytes sent) and what it said (the ban's reason since 2026-12-03).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import statistics
import time

from netdiag.bench.attack.base import AsyncAttack, AttackContext, Figure, Outcome
from netdiag.bench.attack.wire import PROTOCOL_VERSION, AttackKey, Refused, WirePeer

# refused reconnects timed after the ban, each from its own address 127.0.1.N (the per-IP
# connection rate would refuse most at accept() otherwise): CPU is read in clock ticks (10 ms),
# so it takes a few hundred to see a refusal's; the node's idle CPU over as long is subtracted
REFUSALS = 200
QUICK_REFUSALS = 3
IDLE_S = 5.0  # the node's idle CPU is measured this long before the refusals (quick: too)


class ReconnectBan(AsyncAttack):
    name = "reconnect_ban"
    summary = "one violation per connection, then reconnect: the peer is banned within a few"

    def __init__(self, attempts: int = 12) -> None:
        self.attempts = attempts

    async def _run(self, ctx: AttackContext) -> Outcome:
        t = ctx.cluster.target(ctx.target_index)
        key = AttackKey()
        n = self.attempts
        pause = max(0.1, ctx.duration_s / n)
        accepted = 0
        first_refused: int | None = None
        for i in range(1, n + 1):
            try:
                peer = await WirePeer.connect(t, ctx.source_ip)
                await peer.handshake(key, t)
                refusal = await peer.refused_after_open(0.5)
            except (Refused, OSError, TimeoutError, ssl.SSLError) as e:
                refusal = str(e) or type(e).__name__
                peer = None
            if refusal is None and peer is not None:
                accepted += 1
                hello = {
                    "t": "hello",
                    "network_id": t.network_id,
                    "genesis_hash": t.genesis_hash,
                    "version": PROTOCOL_VERSION,
                    "node_id": key.node_id,
                    "nonce": os.urandom(32),
                    "listen_port": 0,
                }
                try:
                    await peer.send(hello)  # Hello after the handshake: a violation
                    await peer.recv(1.0)
                except (Refused, OSError, ssl.SSLError):
                    pass
            elif first_refused is None:
                first_refused = i
            if peer is not None:
                await peer.aclose()
            ctx.progress(f"reconnect {i}/{n}: {'accepted' if refusal is None else 'refused'}")
            await asyncio.sleep(pause)
        banned = first_refused is not None
        cost = await self._refusals(ctx, key) if banned else {}
        return Outcome(
            banned=banned,
            defended=banned,
            why=f"{accepted} of {n} reconnects accepted after a violation each"
            + (f"; refused from attempt {first_refused}" if banned else "; never banned"),
            figures={
                "reconnects": n,
                "reconnects_accepted": accepted,
                "first_refused_attempt": first_refused,
                **cost,
            },
        )

    async def _refusals(self, ctx: AttackContext, key: AttackKey) -> dict[str, Figure]:
        """What a banned peer reconnecting in a loop costs the node: ``REFUSALS`` reconnects
        back to back (each from its own address), the node's CPU (utime + stime, less its idle
        rate) and the bytes it sent per refused reconnect, and what the refusal said."""
        t = ctx.cluster.target(ctx.target_index)
        node = ctx.cluster.nodes[ctx.target_index]
        pid = node.proc.pid if node.proc is not None else None
        n = QUICK_REFUSALS if ctx.quick else REFUSALS
        sent: list[int] = []
        reasons: list[str] = []
        idle0, t0 = cpu_s(pid), time.monotonic()
        await asyncio.sleep(1.0 if ctx.quick else IDLE_S)  # the node's own CPU (slots, gossip)
        idle1, idle_wall = cpu_s(pid), time.monotonic() - t0
        cpu0, t0 = cpu_s(pid), time.monotonic()
        for i in range(n):
            source = f"127.0.1.{1 + i % 250}"
            peer = None
            sock: socket.socket | None = None  # unbound (or the last one's) if fromfd raised
            try:
                peer = await WirePeer.connect(t, source)
                # a dup: asyncio closes its own fd at the node's close, before we can look
                sock = socket.fromfd(
                    peer.writer.get_extra_info("socket").fileno(),
                    socket.AF_INET,
                    socket.SOCK_STREAM,
                )
                await peer.handshake(key, t)
                reason = await peer.refused_after_open(1.0) or "accepted"
            except (Refused, OSError, TimeoutError, ssl.SSLError) as e:
                reason = str(e) or type(e).__name__
            if peer is not None and sock is not None:
                got = tcp_received_raw(sock)  # up to its Disconnect (TLS records included)
                with contextlib.suppress(asyncio.TimeoutError, ConnectionError, OSError):
                    await asyncio.wait_for(peer.reader.read(), 1.0)  # to the node's close
                sent.append(max(got, tcp_received_raw(sock)))
                sock.close()
            if peer is not None:
                await peer.aclose()
            reasons.append(reason)
        wall, cpu1 = time.monotonic() - t0, cpu_s(pid)
        said = next((r for r in reasons if "banned" in r), reasons[-1] if reasons else "")
        return {
            "refusals_timed": n,
            "refusals_banned": sum("banned" in r for r in reasons),  # the rest: at accept()
            "refusal_reason": said[:240],
            "refusal_says_why": "banned (" in said and "):" in said,
            "refusal_node_bytes_median": int(statistics.median(sent)) if sent else None,
            "refusal_node_cpu_ms_each": (
                None
                if None in (cpu0, cpu1, idle0, idle1)
                else round(
                    ((cpu1 - cpu0) - (idle1 - idle0) * wall / idle_wall) * 1000 / n,  # type: ignore[operator]
                    2,
                )
            ),
            "node_idle_cpu_pct": (
                None
                if idle0 is None or idle1 is None
                else round((idle1 - idle0) * 100 / idle_wall, 1)
            ),
            "refusal_wall_ms_each": round(wall * 1000 / n, 1),
        }


def cpu_s(pid: int | None) -> float | None:
    """The process's user + system CPU seconds (/proc/PID/stat), None when unreadable."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tcp_received_raw(sock: socket.socket) -> int:
    """Bytes our TCP socket received from the node (TLS records included; 0 when unknown)."""
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 136)
    except (OSError, AttributeError):
        return 0
    return int.from_bytes(raw[128:136], "little") if len(raw) >= 136 else 0


ATTACK = ReconnectBan()
