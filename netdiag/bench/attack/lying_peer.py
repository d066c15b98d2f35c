"""Liveness: one lying peer per validator claims Status(height=10^9) and never serves it.

Each liar completes the handshake with its own key, repeats its claim every second, answers
pings and ignores every request; when dropped it reconnects with the same key. A defended
node trusts only claims whose tip it has verified (the chain keeps >= 90 % of its normal
rate) and bans a peer whose claim cannot be served within the stall timeout.
"""

from __future__ import annotations

import asyncio
import os
import ssl

from netdiag.bench.attack.base import AsyncAttack, AttackContext, Outcome
from netdiag.bench.attack.wire import (
    AttackKey,
    Refused,
    Target,
    WirePeer,
    open_session,
    try_handshake,
)

CLAIMED_HEIGHT = 10**9


class LyingPeer(AsyncAttack):
    name = "lying_peer"
    summary = "a liar per validator claims height 10^9: chain keeps >= 90 %, liars banned"
    growth_bound = 0.9

    async def _run(self, ctx: AttackContext) -> Outcome:
        targets = [ctx.cluster.target(i) for i in range(len(ctx.cluster.nodes))]
        keys = [AttackKey() for _ in targets]
        stats = {"sessions": 0, "refused": 0, "dropped": 0, "requests_ignored": 0}
        loop = asyncio.get_running_loop()
        end = loop.time() + ctx.duration_s

        async def lie(t: Target, key: AttackKey) -> None:
            while loop.time() < end:
                peer = await open_session(t, ctx.source_ip, key, 0.3)
                if peer is None:
                    stats["refused"] += 1
                    await asyncio.sleep(0.5)
                    continue
                stats["sessions"] += 1
                try:
                    await self._session(peer, t, end, stats)
                except (Refused, OSError, ssl.SSLError):
                    stats["dropped"] += 1
                finally:
                    await peer.aclose()

        ctx.progress(f"{len(targets)} liars claiming height {CLAIMED_HEIGHT:,}")
        await asyncio.gather(*(lie(t, k) for t, k in zip(targets, keys, strict=True)))
        refusals = [
            await try_handshake(t, ctx.source_ip, k) for t, k in zip(targets, keys, strict=True)
        ]
        banned = sum(r is not None for r in refusals)
        return Outcome(
            banned=banned == len(targets),
            why=f"{stats['sessions']} liar sessions opened, {stats['dropped']} dropped by the "
            f"nodes, {stats['refused']} reconnects refused; {banned}/{len(targets)} liars "
            "refused at the end",
            figures={**{f"liar_{k}": v for k, v in stats.items()}, "liars_banned": banned},
        )

    async def _session(self, peer: WirePeer, t: Target, end: float, stats: dict[str, int]) -> None:
        loop = asyncio.get_running_loop()
        last_claim = 0.0
        while loop.time() < end:
            if loop.time() - last_claim >= 1.0:
                await peer.send(
                    {
                        "t": "status",
                        "height": CLAIMED_HEIGHT,
                        "tip_hash": os.urandom(32),
                        "genesis_hash": t.genesis_hash,
                    }
                )
                last_claim = loop.time()
            msg = await peer.recv(0.2)
            if msg is None:
                continue
            tag = msg.get("t")
            if tag == "bye":
                raise Refused(str(msg.get("reason")))
            if tag == "ping":
                await peer.send({"t": "pong", "nonce": msg["nonce"]})
            elif tag in ("getheaders", "getblocks", "getblocksbyhash"):
                stats["requests_ignored"] += 1


ATTACK = LyingPeer()
