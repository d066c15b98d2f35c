"""Onboarding's records: the host it needs, its sources, requests, statistics and view."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import msgspec

from netdiag.node.chain import Chain
from netdiag.node.link import Link
from netdiag.node.model import BlockHeader

if TYPE_CHECKING:
    from netdiag.node.onboard import Onboarding

HEADER_BATCH = 512
BACKFILL_BATCH = 128  # a served range's cap (dispatch.MAX_SERVE_BLOCKS)
REQ_BASE = 1 << 44  # request ids apart from the sync engines'
ACTIVE = ("waiting", "headers", "manifest", "chunks", "block")


class OnboardHost(Protocol):
    @property
    def chain(self) -> Chain: ...
    @property
    def conns(self) -> dict[bytes, Link]: ...

    def ban(self, conn: Link, reason: str) -> None: ...
    def penalize(self, conn: Link, amount: float, reason: str) -> None: ...
    def info(self, event: str, msg: str, **fields: object) -> None: ...
    def note(self, event: str, msg: str, **fields: object) -> None: ...
    def synchronized(self) -> bool: ...


class SignedHeader(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """(never in a cycle: a joiner holds up to the whole chain of them, outside the GC)"""

    header: BlockHeader
    hash: bytes
    signature: bytes


@dataclass
class Source:
    conn: Link
    inflight: int = 0
    timeout_s: float = 2.0
    chunks: int = 0
    bytes: int = 0
    busy_s: float = 0.0  # summed request latency of the chunks it served
    bad: int = 0


@dataclass
class Pending:
    conn: Link
    kind: str  # headers | manifest | chunk | block | backfill
    key: int  # headers/backfill start height, chunk index, block height
    sent: float
    deadline: float


@dataclass
class OnboardStats:
    started: float = 0.0
    selected_at: float | None = None  # the snapshot chosen: headers, manifest, chunks begin
    restored_at: float | None = None  # state installed (blocks after H follow by sync)
    headers_verified: int = 0
    chunks_verified: int = 0
    chunks_resumed: int = 0
    chunks_bad: int = 0
    chunk_retries: int = 0
    bytes_fetched: int = 0
    backfilled: int = 0
    backfill_done_at: float | None = None
    fallback: str = ""
    chunk_latency_s: list[float] = field(default_factory=list)


def onboard_view(ob: Onboarding) -> dict[str, object]:
    m = ob.manifest
    base = ob.host.chain.store.base_height()
    lat = sorted(ob.stats.chunk_latency_s)
    return {
        "phase": ob.phase,
        "snapshot_height": ob.target[0] if ob.target else None,
        "headers_verified": ob.stats.headers_verified,
        "chunks_total": len(m.chunks) if m else 0,
        "chunks_verified": len(ob.have),
        "chunks_fetched": ob.stats.chunks_verified,  # this run, from peers (not resumed)
        "chunks_resumed": ob.stats.chunks_resumed,
        "chunks_bad": ob.stats.chunks_bad,
        "chunk_retries": ob.stats.chunk_retries,
        "chunks_queued": len(ob.todo),
        "requests_in_flight": len(ob.pending),
        "bytes_fetched": ob.stats.bytes_fetched,
        "chunk_latency_p50_s": lat[len(lat) // 2] if lat else None,
        "sources": {
            nid.hex()[:16]: {
                "chunks": s.chunks,
                "bytes": s.bytes,
                "bytes_per_s": s.bytes / s.busy_s if s.busy_s else None,
                "inflight": s.inflight,
                "bad": s.bad,
            }
            for nid, s in ob.sources.items()
        },
        "backfill": {
            "base": base,
            "blocks": ob.stats.backfilled,
            "remaining": max(0, base - 1),
            "done": base == 0,
        },
        "fallback": ob.stats.fallback,
        "restored_s": (
            None
            if ob.stats.restored_at is None
            else round(ob.stats.restored_at - ob.stats.started, 3)
        ),
        "transfer_s": (  # snapshot chosen -> state installed: headers, manifest, chunks, block
            None
            if ob.stats.restored_at is None or ob.stats.selected_at is None
            else round(ob.stats.restored_at - ob.stats.selected_at, 3)
        ),
    }
