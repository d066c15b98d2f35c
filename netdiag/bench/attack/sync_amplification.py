"""Sync amplification: authenticated peers ask for the largest block ranges, never read.

Each peer sends GetBlocks(0, 128) over and over without reading a byte of the answers, so the
node's answers pile up in its send buffers. A defended node caps what it queues per peer
(``max_write_buffer_bytes``) and per node, cuts the peer that does not read (its output makes
no progress for ``write_stall_timeout_s``, or exceeds the cap) and frees what it held for it,
and its RSS comes back afterwards. The row counts the sessions the node ended (a write of ours
failing: the node reset the connection) and how long they lasted; a full-length run (not
``--quick``) in which the node ended none is not defended.
"""

from __future__ import annotations

import asyncio
import ssl
import statistics
from typing import cast

from netdiag.bench.attack.base import AsyncAttack, AttackContext, Outcome
from netdiag.bench.attack.wire import AttackKey, Refused, WirePeer, frame

PEERS = 8


class SyncAmplification(AsyncAttack):
    name = "sync_amplification"
    summary = "peers request 128-block ranges and never read: queues capped, RSS comes back"
    rss_bound = 1.25
    growth_bound = 0.9

    async def _run(self, ctx: AttackContext) -> Outcome:
        t = ctx.cluster.target(ctx.target_index)
        stats = {"requests": 0, "sessions": 0, "closed": 0, "refused": 0}
        lifetimes: list[float] = []  # seconds from handshake to the node ending the session
        loop = asyncio.get_running_loop()
        end = loop.time() + ctx.duration_s

        async def hog() -> None:
            key = AttackKey()
            req = 0
            while loop.time() < end:
                try:
                    peer = await WirePeer.connect(t, ctx.source_ip)
                    await peer.handshake(key, t)
                except (Refused, OSError, TimeoutError, ssl.SSLError):
                    stats["refused"] += 1
                    await asyncio.sleep(0.5)
                    continue
                stats["sessions"] += 1
                began = loop.time()
                cast(asyncio.Transport, peer.writer.transport).pause_reading()  # answers pile up
                try:
                    while loop.time() < end and not peer.writer.is_closing():
                        batch = b"".join(
                            frame({"t": "getblocks", "req_id": req + k, "start": 0, "count": 128})
                            for k in range(20)
                        )
                        req += 20
                        await asyncio.wait_for(peer.send_raw(batch), 2.0)
                        stats["requests"] += 20
                        await asyncio.sleep(0.02)
                except (OSError, TimeoutError, ssl.SSLError):
                    pass
                finally:
                    if loop.time() < end:  # ended before the attack did: the node cut it
                        stats["closed"] += 1
                        lifetimes.append(loop.time() - began)
                    await peer.aclose()

        async def report() -> None:
            while loop.time() < end:
                ctx.progress(f"{stats['requests']} range requests unread")
                await asyncio.sleep(1.0)

        await asyncio.gather(report(), *(hog() for _ in range(PEERS)))
        life = (
            f" after {statistics.median(lifetimes):.1f} s (median; max {max(lifetimes):.1f} s)"
            if lifetimes
            else ""
        )
        return Outcome(
            defended=None if ctx.quick or stats["closed"] else False,
            why=f"{stats['requests']} GetBlocks(0, 128) sent unread over {stats['sessions']} "
            f"sessions; {stats['closed']} ended by the node{life}, "
            f"{stats['refused']} reconnects refused",
            figures={
                "range_requests": stats["requests"],
                "hog_sessions": stats["sessions"],
                "sessions_ended": stats["closed"],
                "session_s_median": round(statistics.median(lifetimes), 1) if lifetimes else None,
                "session_s_max": round(max(lifetimes), 1) if lifetimes else None,
                "reconnects_refused": stats["refused"],
            },
        )


ATTACK = SyncAmplification()
