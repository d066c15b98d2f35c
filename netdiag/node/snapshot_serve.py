"""The snapshot side of the wire: serve header chains, manifests and chunks; route answers
to the joiner (onboard.py); announce our newest snapshot on the gossip topic."""

from __future__ import annotations

import msgspec

from netdiag.node.chain import Chain
from netdiag.node.crypto import Identity
from netdiag.node.link import Link
from netdiag.node.messages import (
    TOPIC_SNAPSHOTS,
    ChunkData,
    GetChunk,
    GetHeaderChain,
    GetSnapshot,
    HeaderChain,
    Message,
    SnapshotManifest,
)
from netdiag.node.onboard import Onboarding
from netdiag.node.onboard_state import HEADER_BATCH
from netdiag.node.snapshot_gossip import make_announce
from netdiag.node.snapshot_policy import SnapshotPolicy

SNAPSHOT_MESSAGES = (
    GetHeaderChain,
    HeaderChain,
    GetSnapshot,
    SnapshotManifest,
    GetChunk,
    ChunkData,
)


class _Signed(msgspec.Struct, array_like=True, frozen=True):
    """A stored block read for its header, hash and signature (transactions skipped)."""

    header: msgspec.Raw
    hash: bytes
    signature: bytes


_signed = msgspec.msgpack.Decoder(_Signed)
_enc = msgspec.msgpack.Encoder()


class SnapshotService:
    def __init__(
        self,
        chain: Chain,
        policy: SnapshotPolicy,
        onboarding: Onboarding,
        corrupt_chunks: bool = False,
    ) -> None:
        self.chain = chain
        self.corrupt_chunks = corrupt_chunks
        self.policy = policy
        self.onboarding = onboarding
        self.served_chunks = 0
        self.served_bytes = 0

    def on_message(self, conn: Link, msg: Message) -> None:
        ob = self.onboarding
        match msg:
            case GetHeaderChain(req_id=req, start=start, count=count):
                conn.send(HeaderChain(req, self.header_chain(start, count)))
            case GetSnapshot(req_id=req, height=height):
                m = next((m for m in self.policy.served() if m.height == height), None)
                conn.send(SnapshotManifest(req, m.encode() if m is not None else b""))
            case GetChunk(req_id=req, chunk_id=cid):
                data = self.policy.store.chunk(cid) if len(cid) == 32 else None
                if data and self.corrupt_chunks:  # LAB ONLY: a bad source
                    data = data[:-1] + bytes([data[-1] ^ 1])
                self.served_chunks += data is not None
                self.served_bytes += len(data or b"")
                conn.send(ChunkData(req, data or b""))
            case HeaderChain():
                ob.on_header_chain(conn, msg)
            case SnapshotManifest():
                ob.on_manifest(conn, msg)
            case ChunkData():
                ob.on_chunk(conn, msg)

    def header_chain(self, start: int, count: int) -> list[bytes]:
        chain = self.chain
        base = chain.store.base_height()
        if not max(1, base) <= start <= chain.height or count <= 0:
            return []
        n = min(count, HEADER_BATCH, chain.height - start + 1)
        out = []
        for raw in chain.store.iter_range(start, n):
            s = _signed.decode(raw)
            out.append(_enc.encode((s.header, s.hash, s.signature)))
        return out

    def announcement(self, identity: Identity, wall_ms: int) -> bytes | None:
        """Our newest snapshot still on our chain, signed for the gossip topic."""
        served = self.policy.served()
        if not served:
            return None
        m = served[0]
        return make_announce(
            identity, self.chain.genesis_hash, m.height, m.block_hash, m.id(), wall_ms
        )


__all__ = ["SNAPSHOT_MESSAGES", "TOPIC_SNAPSHOTS", "SnapshotService"]
