"""Inbound slot exhaustion: many addresses hold connections half-way through the handshake.

Connections from 16 loopback addresses complete TLS and then send a Hello one byte at a time,
never finishing it; each is reopened as soon as the node drops it. Meanwhile an honest newcomer
(its own address and key) tries a full handshake every second. A defended node bounds what a
handshaking connection may hold (handshake timeout, per-IP and per-node pending limits) so that
newcomers still get in.
"""

from __future__ import annotations

import asyncio
import ssl

from netdiag.bench.attack.base import AsyncAttack, AttackContext, Outcome
from netdiag.bench.attack.wire import AttackKey, WirePeer, frame, try_handshake

SOURCES = 16
PER_SOURCE = 16


class SlotExhaustion(AsyncAttack):
    name = "slot_exhaustion"
    summary = "16 addresses hold half-sent Hellos: an honest newcomer still gets in"
    rss_bound = 1.25
    growth_bound = 0.9

    async def _run(self, ctx: AttackContext) -> Outcome:
        t = ctx.cluster.target(ctx.target_index)
        # its own slice of loopback (127.0.0.0/8 is all local): 127.<n>.0.1..16 hold the
        # slots, 127.<n>.0.200 is the newcomer; n from this attack's source address
        n = 100 + int(ctx.source_ip.rsplit(".", 1)[1]) % 100
        sources = [f"127.{n}.0.{i + 1}" for i in range(SOURCES)]
        newcomer_ip = f"127.{n}.0.200"
        loop = asyncio.get_running_loop()
        end = loop.time() + ctx.duration_s
        stats = {"opened": 0, "open_failed": 0}
        hello = frame(
            {
                "t": "hello",
                "network_id": t.network_id,
                "genesis_hash": t.genesis_hash,
                "version": 1,
                "node_id": AttackKey().node_id,
                "nonce": bytes(32),
                "listen_port": 0,
            }
        )

        async def hold(src: str) -> None:
            while loop.time() < end:
                try:
                    peer = await WirePeer.connect(t, src, timeout_s=2.0)
                except (OSError, TimeoutError, ssl.SSLError):
                    stats["open_failed"] += 1
                    await asyncio.sleep(0.2)
                    continue
                stats["opened"] += 1
                try:
                    for i in range(len(hello) - 1):  # never the last byte
                        if loop.time() >= end or peer.writer.is_closing():
                            break
                        await peer.send_raw(hello[i : i + 1])
                        await asyncio.sleep(1.0)
                except (OSError, ssl.SSLError):
                    pass
                finally:
                    await peer.aclose()

        async def newcomer(results: list[bool]) -> None:
            key = AttackKey()
            await asyncio.sleep(min(2.0, ctx.duration_s / 4))  # let the holders settle in
            while loop.time() < end:
                results.append(await try_handshake(t, newcomer_ip, key) is None)
                ctx.progress(
                    f"{stats['opened']} half-open handshakes; newcomer "
                    f"{sum(results)}/{len(results)} admitted"
                )
                await asyncio.sleep(1.0)

        results: list[bool] = []
        await asyncio.gather(
            newcomer(results), *(hold(s) for s in sources for _ in range(PER_SOURCE))
        )
        admitted = sum(results)
        ratio = admitted / len(results) if results else None
        return Outcome(
            defended=ratio is not None and ratio >= 0.9,
            why=f"{stats['opened']} half-open handshakes held from {SOURCES} addresses "
            f"({stats['open_failed']} connects failed); an honest newcomer got in "
            f"{admitted} of {len(results)} tries",
            figures={
                "holders": SOURCES * PER_SOURCE,
                "half_open_opened": stats["opened"],
                "half_open_connect_failed": stats["open_failed"],
                "newcomer_tries": len(results),
                "newcomer_admitted": admitted,
            },
        )


ATTACK = SlotExhaustion()
