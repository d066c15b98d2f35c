"""Malformed frames: garbage before the handshake and after it, from one address, repeatedly.

Before the handshake: noise, an oversized length prefix, undecodable msgpack, a Hello with
wrong types, a frame truncated by EOF. After a valid handshake (fresh key each time): an
undecodable frame, an unknown message tag, an oversized frame. A defended node never crashes,
never stores anything, closes each offender and bans the address after repeated failures.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import struct

import msgspec

from netdiag.bench.attack.base import AsyncAttack, AttackContext, Outcome
from netdiag.bench.attack.wire import AttackKey, Refused, WirePeer, frame, try_handshake

LEN = struct.Struct(">I")
_ARRAY = msgspec.msgpack.encode([1, 2, 3])
PRE_HANDSHAKE: list[tuple[str, bytes]] = [
    ("noise", os.urandom(3000)),
    ("oversized_prefix", LEN.pack(0xFFFFFFFF) + b"x" * 16),
    ("undecodable", LEN.pack(5) + b"\xc1\xc1\xc1\xc1\xc1"),
    ("hello_wrong_types", frame({"t": "hello", "network_id": 7, "genesis_hash": "x"})),
    ("truncated", LEN.pack(100) + b"\x00" * 10),
]
POST_HANDSHAKE: list[tuple[str, bytes]] = [
    ("undecodable_open", LEN.pack(5) + b"\xc1\xc1\xc1\xc1\xc1"),
    ("unknown_tag", frame({"t": "launch-missiles", "n": 1})),
    ("oversized_open", LEN.pack(64 << 20) + b"y" * 64),
    ("not_a_map", LEN.pack(len(_ARRAY)) + _ARRAY),
]


class MalformedFrames(AsyncAttack):
    name = "malformed_frames"
    summary = "garbage frames before/after the handshake: node survives, address banned"

    async def _run(self, ctx: AttackContext) -> Outcome:
        t = ctx.cluster.target(ctx.target_index)
        loop = asyncio.get_running_loop()
        end = loop.time() + ctx.duration_s
        sent = 0
        refused = 0
        closed_by_node = 0
        while loop.time() < end:
            for kind, data in PRE_HANDSHAKE + POST_HANDSHAKE:
                try:
                    peer = await WirePeer.connect(t, ctx.source_ip, timeout_s=2.0)
                    if (kind, data) in POST_HANDSHAKE:
                        await peer.handshake(AttackKey(), t, timeout_s=2.0)
                except (Refused, OSError, TimeoutError, ssl.SSLError):
                    refused += 1
                    continue
                try:
                    await peer.send_raw(data)
                    sent += 1
                    while await peer.recv(0.5) is not None:
                        pass  # read until the node closes (or 0.5 s of silence)
                except (Refused, OSError, ssl.SSLError):
                    closed_by_node += 1
                finally:
                    await peer.aclose()
                if loop.time() >= end:
                    break
            ctx.progress(f"{sent} malformed frames sent, {refused} connections refused")
        refusal = await try_handshake(t, ctx.source_ip, AttackKey())
        return Outcome(
            banned=refusal is not None,
            defended=refusal is not None,
            why=f"{sent} malformed frames sent ({closed_by_node} answered by a close), "
            f"{refused} connections refused; address "
            + ("banned at the end" if refusal else "still accepted at the end"),
            figures={
                "frames_sent": sent,
                "closed_by_node": closed_by_node,
                "connections_refused": refused,
            },
        )


ATTACK = MalformedFrames()
