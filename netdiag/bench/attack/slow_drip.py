"""Slow drip: authenticated peers send most of one frame, then trickle the rest a byte at a time,
each byte just inside the idle timeout, so the frame never completes.

Each of ``PEERS`` peers completes the handshake, sends a frame header declaring ``FRAME_BYTES``
and all of the body but ``TAIL`` bytes at once (the node buffers it in its decoder), then one
byte every ``DRIP_S`` (under the node's 60 s ``idle_timeout_s``: the idle timer alone, which any
byte restarts, never fires). It reads and discards whatever the node sends (so only the read
side is under test). Only the node's per-frame deadline can end these sessions: a frame in
flight must complete within ``idle_timeout_s`` + declared length / ``MIN_PEER_RATE`` of its
first byte (docs/node.md, limits: 60 + 64 KiB / 8 KiB/s = 68 s here); before it (c007078) a
peer could hold a 4 MiB partial frame and its slot for ever.

Defended (full run): every session ended by the node within that deadline plus ``MARGIN_S`` of
the frame's first byte, and ``limit_hits{limit="frame_timeout"}`` up by at least the sessions.
Not defended on positive evidence of failure: a session still open at the end of the watch.
Inconclusive (an error) when the sessions were ended by something else (frame_timeout not
raised by them): the deadline was not what was tested. ``--quick`` watches only ``--duration``
and gives no verdict of its own.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import statistics

from netdiag.bench.attack.base import AsyncAttack, AttackContext, Figure, Outcome
from netdiag.bench.attack.cluster import http_text
from netdiag.bench.attack.stalled_reader import limit_hits
from netdiag.bench.attack.wire import LEN, AttackKey, Refused, WirePeer, end_all

PEERS = 8
FRAME_BYTES = 64 << 10
TAIL = 64  # bytes of the body dripped (more than the deadline lets through)
IDLE_S = 60.0  # the node's idle_timeout_s default
MIN_PEER_RATE = 8 << 10  # netdiag/node/limits.py (the attack does not import the node)
DRIP_S = 20.0  # one byte this often: inside the idle timeout
DEADLINE_S = IDLE_S + (FRAME_BYTES + LEN.size) / MIN_PEER_RATE
MARGIN_S = 15.0
CONNECT_S = 30.0


class SlowDrip(AsyncAttack):
    name = "slow_drip"
    summary = (
        "peers send most of a 64 KiB frame, then a byte every 20 s (inside the idle timeout):"
        " cut by the per-frame deadline"
    )
    rss_bound = 1.25
    growth_bound = 0.9

    async def _run(self, ctx: AttackContext) -> Outcome:
        node = ctx.cluster.nodes[ctx.target_index]
        t = ctx.cluster.target(ctx.target_index)
        loop = asyncio.get_running_loop()
        watch_s = ctx.duration_s if ctx.quick else DEADLINE_S + MARGIN_S
        metrics_before = http_text(node.api_port, "/metrics")
        ended_after: list[float] = []
        refused = 0
        body = os.urandom(FRAME_BYTES)
        data = LEN.pack(FRAME_BYTES) + body

        async def drip(peer: WirePeer) -> None:
            async def drain() -> None:  # read (and drop) what the node sends
                while await peer.reader.read(1 << 16):
                    pass

            reader = asyncio.create_task(drain())
            try:
                began = loop.time()
                await peer.send_raw(data[:-TAIL])
                for b in data[-TAIL:]:
                    # the node's cut is a graceful close: our reader sees its EOF
                    done, _ = await asyncio.wait({reader}, timeout=DRIP_S)
                    if done or loop.time() - began > watch_s:
                        break
                    await peer.send_raw(bytes([b]))
                if not reader.done():
                    await asyncio.wait({reader}, timeout=max(0.0, began + watch_s - loop.time()))
                if reader.done():
                    ended_after.append(loop.time() - began)
            except (OSError, ssl.SSLError):
                ended_after.append(loop.time() - began)
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)

        peers: list[WirePeer] = []
        tasks: list[asyncio.Task[None]] = []
        connect_end = loop.time() + CONNECT_S
        try:
            while len(peers) < PEERS and loop.time() < connect_end:
                try:
                    peer = await WirePeer.connect(t, ctx.source_ip)
                    await peer.handshake(AttackKey(), t)
                except (Refused, OSError, TimeoutError, ssl.SSLError):
                    refused += 1
                    await asyncio.sleep(0.5)
                    continue
                peers.append(peer)
                tasks.append(asyncio.create_task(drip(peer)))
            ctx.progress(f"{len(peers)} peers dripping a {FRAME_BYTES >> 10} KiB frame")
            while not all(task.done() for task in tasks):
                await asyncio.sleep(1.0)
                ctx.progress(f"{len(ended_after)} of {len(peers)} ended by the node")
        finally:
            await end_all(tasks, peers)
        metrics_after = http_text(node.api_port, "/metrics")
        b, a = (
            limit_hits(metrics_before, "frame_timeout"),
            limit_hits(metrics_after, "frame_timeout"),
        )
        hits = None if a is None or b is None else a - b
        n = len(peers)
        med = statistics.median(ended_after) if ended_after else None
        figures: dict[str, Figure] = {
            "sessions": n,
            "refused": refused,
            "frame_bytes": FRAME_BYTES,
            "drip_s": DRIP_S,
            "deadline_s": round(DEADLINE_S, 1),
            "ended_by_node": len(ended_after),
            "ended_after_median_s": None if med is None else round(med, 1),
            "ended_after_max_s": round(max(ended_after), 1) if ended_after else None,
            "frame_timeout_hits": hits,
        }
        why = (
            f"{len(ended_after)}/{n} dripping sessions ended by the node"
            + (f" {med:.1f} / {max(ended_after):.1f} s after the frame began" if med else "")
            + f" (deadline {DEADLINE_S:.0f} s); frame_timeout +{hits}"
        )
        if ctx.quick:
            return Outcome(why=f"quick ({watch_s:g} s watch, no verdict): {why}", figures=figures)
        if n == 0:
            return Outcome(error=f"no session opened ({refused} refused)", figures=figures)
        late = [x for x in ended_after if x > DEADLINE_S + MARGIN_S]
        if len(ended_after) < n or late:
            return Outcome(
                defended=False,
                why=f"{n - len(ended_after)} still open, {len(late)} ended late — {why}",
                figures=figures,
            )
        if hits is None or hits < n:
            return Outcome(error=f"not ended by the frame deadline: {why}", figures=figures)
        return Outcome(defended=True, why=why, figures=figures)


ATTACK = SlowDrip()
