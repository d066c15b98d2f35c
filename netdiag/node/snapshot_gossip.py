"""Snapshot availability: signed announcements on the ``snapshots`` gossip topic.

A node that keeps snapshots publishes ``Announce(node, height, block_hash, manifest_id,
timestamp_ms, signature)`` for its newest one every ``snapshot_announce_s``, signed over
``"netdiag-node/snapshot-announce/v1\\0" + msgpack(genesis_hash, node, height, block_hash,
manifest_id, timestamp_ms)``. The gossip mesh bounds the fan-out (D peers per hop) and its seen
cache drops duplicates; on top, an origin gets at most one accepted announcement per half
interval (more are ignored, never forwarded), and a stale one (older than three intervals) is
ignored — so a chatty or replaying node cannot make the topic storm. A joiner keeps, per
snapshot (height, block hash, manifest id), the peers that announced it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec

from netdiag.node.crypto import Identity, verify

_DOMAIN = b"netdiag-node/snapshot-announce/v1\x00"


class Announce(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    node: bytes
    height: int
    block_hash: bytes
    manifest_id: bytes
    timestamp_ms: int
    signature: bytes


def _signed(genesis_hash: bytes, a: Announce) -> bytes:
    return _DOMAIN + msgspec.msgpack.encode(
        (genesis_hash, a.node, a.height, a.block_hash, a.manifest_id, a.timestamp_ms)
    )


def make_announce(
    identity: Identity,
    genesis_hash: bytes,
    height: int,
    block_hash: bytes,
    manifest_id: bytes,
    timestamp_ms: int,
) -> bytes:
    a = Announce(identity.node_id, height, block_hash, manifest_id, timestamp_ms, b"")
    a.signature = identity.sign(_signed(genesis_hash, a))
    return msgspec.msgpack.encode(a)


SnapKey = tuple[int, bytes, bytes]  # (height, block hash, manifest id)


@dataclass
class Availability:
    """Who announced which snapshot (origin node ids, newest announcement time)."""

    genesis_hash: bytes
    interval_s: float
    clock: Callable[[], float]
    holders: dict[SnapKey, dict[bytes, float]] = field(default_factory=dict)
    last_from: dict[bytes, float] = field(default_factory=dict)
    accepted: int = 0
    ignored: int = 0

    def on_announce(self, data: bytes, now_ms: int) -> tuple[str, str]:
        """Check a gossiped announcement: (accept|ignore|reject, why)."""
        try:
            a = msgspec.msgpack.decode(data, type=Announce)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            return "reject", f"announcement does not decode: {e}"
        if len(a.node) != 32 or len(a.block_hash) != 32 or len(a.manifest_id) != 32:
            return "reject", "announcement fields have the wrong sizes"
        if not verify(a.node, a.signature, _signed(self.genesis_hash, a)):
            return "reject", "announcement signature does not verify"
        now = self.clock()
        if abs(now_ms - a.timestamp_ms) > 3 * self.interval_s * 1000:
            self.ignored += 1
            return "ignore", "announcement is not fresh"
        if now - self.last_from.get(a.node, -1e18) < self.interval_s / 2:
            self.ignored += 1
            return "ignore", "origin announces faster than the topic allows"
        self.last_from[a.node] = now
        self.holders.setdefault((a.height, a.block_hash, a.manifest_id), {})[a.node] = now
        self.accepted += 1
        return "accept", ""

    def best(self, connected: set[bytes], min_height: int = 1) -> tuple[SnapKey, set[bytes]] | None:
        """The highest snapshot that connected peers announced (most holders on a tie)."""
        cands = [
            (key, set(nodes) & connected)
            for key, nodes in self.holders.items()
            if key[0] >= min_height and set(nodes) & connected
        ]
        if not cands:
            return None
        return max(cands, key=lambda c: (c[0][0], len(c[1])))
