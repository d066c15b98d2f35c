"""Gossip spam: authenticated peers publish junk blocks and transactions as fast as they can.

Each flooder completes the handshake with its own key, then sends Publish frames on the block
and transaction topics whose payloads do not decode or do not verify, while draining what the
node sends. A defended node drops them, scores the senders down to a ban (later reconnects
refused), and keeps producing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from typing import Any

from netdiag.bench.attack.base import AsyncAttack, AttackContext, Outcome
from netdiag.bench.attack.wire import (
    AttackKey,
    WirePeer,
    frame,
    open_session,
    try_handshake,
)

FLOODERS = 4


def junk(i: int) -> bytes:
    topic = "blocks" if i % 2 else "txs"
    return frame({"t": "pub", "topic": topic, "data": os.urandom(64) + i.to_bytes(8, "big")})


async def drain(peer: WirePeer) -> None:
    with contextlib.suppress(Exception):
        while await peer.reader.read(1 << 16):
            pass


class PublishFlood(AsyncAttack):
    name = "publish_flood"
    summary = "authenticated peers publish junk blocks/txs at full speed: banned, chain going on"
    rss_bound = 1.25
    growth_bound = 0.9

    async def _run(self, ctx: AttackContext) -> Outcome:
        t = ctx.cluster.target(ctx.target_index)
        keys = [AttackKey() for _ in range(FLOODERS)]
        stats = {"sent": 0, "sessions": 0, "dropped": 0, "refused": 0}
        loop = asyncio.get_running_loop()
        end = loop.time() + ctx.duration_s

        async def flood(key: AttackKey) -> None:
            i = 0
            while loop.time() < end:
                peer = await open_session(t, ctx.source_ip, key, 0.2)
                if peer is None:
                    stats["refused"] += 1
                    await asyncio.sleep(0.5)
                    continue
                stats["sessions"] += 1
                reader = asyncio.create_task(drain(peer))
                try:
                    while loop.time() < end and not reader.done():
                        if peer.writer.is_closing():
                            break  # closed by the node: writing on would go nowhere
                        await peer.send_raw(b"".join(junk(i + k) for k in range(50)))
                        i += 50
                        stats["sent"] += 50
                        await asyncio.sleep(0)  # let the reader see an EOF
                except (OSError, ssl.SSLError):
                    pass
                stats["dropped"] += loop.time() < end  # ended by the node, not by us
                reader.cancel()
                await peer.aclose()

        await self._with_progress(ctx, stats, asyncio.gather(*(flood(k) for k in keys)))
        refusals = [await try_handshake(t, ctx.source_ip, k) for k in keys]
        banned = sum(r is not None for r in refusals)
        return Outcome(
            banned=banned == len(keys),
            defended=banned == len(keys),
            why=f"{stats['sent']} junk publishes written in {stats['sessions']} sessions, "
            f"{stats['dropped']} sessions closed by the node, {stats['refused']} reconnects "
            f"refused; {banned}/{len(keys)} flooders refused at the end",
            figures={
                "publishes_written": stats["sent"],  # to the socket; the node may read fewer
                "flood_sessions": stats["sessions"],
                "sessions_closed_by_node": stats["dropped"],
                "reconnects_refused": stats["refused"],
                "flooders_banned": banned,
            },
        )

    @staticmethod
    async def _with_progress(
        ctx: AttackContext, stats: dict[str, int], work: asyncio.Future[Any]
    ) -> None:
        while not work.done():
            ctx.progress(f"{stats['sent']} junk publishes sent")
            await asyncio.wait([work], timeout=1.0)
        await work


ATTACK = PublishFlood()
