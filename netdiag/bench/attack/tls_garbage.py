"""TLS-layer failures: connections that answer the TLS port with garbage instead of a
ClientHello, or stop half-way through the TLS handshake.

Every such connection fails inside the TLS layer, before the node's own handshake. A defended
node counts these failures toward the per-IP ban like any failed handshake (afterwards a full
handshake from that address is refused) and its memory does not grow with them.
"""

from __future__ import annotations

import asyncio
import os

from netdiag.bench.attack.base import AsyncAttack, AttackContext, Outcome
from netdiag.bench.attack.wire import AttackKey, try_handshake

CONCURRENCY = 16
# the first bytes of a TLS 1.3 ClientHello record, then nothing: the server waits mid-handshake
PARTIAL_CLIENT_HELLO = bytes.fromhex("160301020001") + b"\x00" * 3


class TlsGarbage(AsyncAttack):
    name = "tls_garbage"
    summary = "garbage / half ClientHellos on the TLS port: the address banned, RSS flat"
    rss_bound = 1.25
    growth_bound = 0.9

    async def _run(self, ctx: AttackContext) -> Outcome:
        t = ctx.cluster.target(ctx.target_index)
        if not t.tls:
            return Outcome(error="the target runs without TLS")
        loop = asyncio.get_running_loop()
        end = loop.time() + ctx.duration_s
        stats = {"garbage": 0, "partial": 0, "refused": 0}

        async def worker(i: int) -> None:
            while loop.time() < end:
                partial = i % 2 == 1
                try:
                    r, w = await asyncio.wait_for(
                        asyncio.open_connection(t.host, t.port, local_addr=(ctx.source_ip, 0)),
                        2.0,
                    )
                except (OSError, TimeoutError):
                    stats["refused"] += 1
                    await asyncio.sleep(0.05)
                    continue
                try:
                    w.write(PARTIAL_CLIENT_HELLO if partial else os.urandom(512))
                    await w.drain()
                    stats["partial" if partial else "garbage"] += 1
                    if partial:  # hold it briefly: the server sits in the TLS handshake
                        await asyncio.sleep(0.5)
                    else:
                        await asyncio.wait_for(r.read(1024), 1.0)
                except (OSError, TimeoutError):
                    pass
                finally:
                    w.transport.abort()

        async def report() -> None:
            while loop.time() < end:
                ctx.progress(f"{stats['garbage']} garbage, {stats['partial']} half ClientHellos")
                await asyncio.sleep(1.0)

        await asyncio.gather(report(), *(worker(i) for i in range(CONCURRENCY)))
        refusal = await try_handshake(t, ctx.source_ip, AttackKey())
        return Outcome(
            banned=refusal is not None,
            defended=refusal is not None,
            why=f"{stats['garbage']} garbage and {stats['partial']} half ClientHellos sent, "
            f"{stats['refused']} TCP connects refused; afterwards a full handshake from that "
            f"address was {'refused' if refusal else 'accepted'}",
            figures={
                "garbage_connections": stats["garbage"],
                "partial_client_hellos": stats["partial"],
                "tcp_refused": stats["refused"],
            },
        )


ATTACK = TlsGarbage()
