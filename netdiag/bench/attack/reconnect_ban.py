"""Bans: one peer key breaks the protocol once per connection and reconnects, again and again.

Each session completes the handshake, then sends a second Hello (a protocol violation the node
closes on). A defended node keeps the peer's score across reconnects and bans it once the
violations add up (``max_violations``, ``ban_threshold``): later reconnects are refused.
"""

from __future__ import annotations

import asyncio
import os
import ssl

from netdiag.bench.attack.base import AsyncAttack, AttackContext, Outcome
from netdiag.bench.attack.wire import PROTOCOL_VERSION, AttackKey, Refused, WirePeer


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
        return Outcome(
            banned=banned,
            defended=banned,
            why=f"{accepted} of {n} reconnects accepted after a violation each"
            + (f"; refused from attempt {first_refused}" if banned else "; never banned"),
            figures={
                "reconnects": n,
                "reconnects_accepted": accepted,
                "first_refused_attempt": first_refused,
            },
        )


ATTACK = ReconnectBan()
