"""Parallel sync's state: the host it needs, its parameters, per-peer and per-request
records and the statistics it reports."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import msgspec

from netdiag.node.chain import Chain
from netdiag.node.link import Link
from netdiag.node.model import Block, decode_block
from netdiag.node.sigpool import SigPool
from netdiag.node.sync import SyncHost

PHASES = ("discovering", "downloading", "verifying", "committing", "following")
PENALTY_UNSERVED_CLAIM = 25.0  # a claimed tip not served in time: a ban on the 4th (score)
T = TypeVar("T")
REQ_ID_BASE = 1 << 40  # parallel request ids never collide with the sequential engine's


def short(b: bytes) -> str:
    return b[:6].hex() + "…"


class WindowHost(SyncHost, Protocol):
    @property
    def chain(self) -> Chain: ...

    def ban(self, conn: Link, reason: str) -> None: ...
    def committed_segment(self, blocks: list[Block], source: str) -> None: ...
    def schedule(self, fn: Callable[[], None]) -> None: ...
    def off_loop(self, fn: Callable[[], T], done: Callable[[T], None]) -> None: ...
    def now_ms(self) -> int: ...
    def info(self, event: str, msg: str, **fields: object) -> None: ...

    @property
    def sigs(self) -> SigPool: ...


@dataclass
class WindowParams:
    window: int = 1024  # heights ahead of the tip that may be requested (Bitcoin: 1024)
    chunk: int = 64  # blocks per request
    per_peer: int = 4  # requests in flight per peer
    timeout_min_s: float = 2.0
    timeout_max_s: float = 64.0
    min_distance: int = 32  # closer than this, the sequential follower handles it
    verify_step: int = 128  # blocks verified per event-loop turn, at most
    verify_budget_s: float = 0.01  # and no more time than this per turn (then yield)
    bench_s: float = 30.0  # a repeatedly stalling peer gets no new work this long
    stalls_to_bench: int = 2


@dataclass
class PeerSync:
    conn: Link
    claimed: int = 0
    claimed_tip: bytes = b""
    verified: int = -1  # height of the peer's tip block we authenticated
    verified_tip: bytes = b""
    tip_req: int | None = None
    inflight: int = 0
    timeout_s: float = 2.0
    stalls: int = 0
    benched_until: float = 0.0
    blocks_served: int = 0
    last_stall_at: float = -1.0
    failed_claims: int = 0  # claimed tips it did not serve (its claims no longer pause anything)


@dataclass
class Req:
    req_id: int
    conn: Link
    start: int
    count: int
    sent_at: float
    deadline: float
    kind: str = "range"  # range | tip


@dataclass
class SyncStats:
    blocks_downloaded: int = 0
    blocks_committed: int = 0
    segments_committed: int = 0
    breaks: int = 0
    stalls: int = 0
    bans: int = 0
    refetched_blocks: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    last_reason: str = ""
    timeouts_s: dict[str, float] = field(default_factory=dict)


def decode_range(raws: list[bytes], start: int, count: int) -> tuple[list[Block], str]:
    """A range answer decoded, or the offence that makes it a forgery (empty if none)."""
    if len(raws) > count:
        return [], f"served {len(raws)} blocks for a request of {count}"
    blocks: list[Block] = []
    for i, raw in enumerate(raws):
        try:
            b = decode_block(raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return [], f"served an undecodable block at {start + i}"
        if b.height != start + i:
            return [], (
                f"served range {start}..{start + count - 1} out of order "
                f"(block {b.height} in position {i})"
            )
        blocks.append(b)
    return blocks, ""
