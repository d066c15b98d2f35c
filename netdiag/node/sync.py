"""Catch-up sync, part 1: simple and sequential.

Peers announce ``Status(height, tip)``; when one is ahead, ask it for the next range
(``GetBlocks(start, count)``), apply the blocks strictly in order through the same validation as
gossip, and ask again until caught up. One request in flight; a peer that stalls past the
timeout or answers with invalid or unsolicited blocks is penalized and another is tried.

This is the seam for parallel sync (range discovery, a download window over several peers,
sequential verification, stall detection, entropy consensus checks): replace ``SequentialSync``
behind the same three entry points — ``on_status``, ``on_blocks``, ``tick`` — and ``request_gap``
for orphans. The wire messages it needs (Status, GetHeaders/Headers, GetBlocks/Blocks) exist.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import msgspec

from netdiag.node.link import Link
from netdiag.node.messages import Blocks, GetBlocks, GetHeaders, Headers, Status
from netdiag.node.model import BlockHeader

MAX_BRANCH = 128  # blocks fetched to evaluate a competing branch (the serve limit)


class SyncHost(Protocol):
    @property
    def height(self) -> int: ...
    def apply_block(
        self, conn: Link, raw: bytes, source: str, next_raw: bytes | None = None
    ) -> str: ...
    def apply_branch(self, conn: Link, raws: list[bytes]) -> str: ...
    def fork_point(self, headers: list[BlockHeader]) -> int | None: ...
    def penalize(self, conn: Link, amount: float, reason: str) -> None: ...
    def note(self, event: str, msg: str, **fields: object) -> None: ...
    def stored_hash(self, height: int) -> bytes | None: ...


@dataclass
class InFlight:
    conn: Link
    req_id: int
    start: int
    count: int
    deadline: float
    kind: str = "range"  # range: extend our tip | headers: find a fork point | branch: reorg


class SequentialSync:
    def __init__(
        self,
        host: SyncHost,
        clock: Callable[[], float],
        batch: int = 64,
        timeout_s: float = 5.0,
        max_reorg_depth: int = 64,
    ) -> None:
        self.host = host
        self.max_reorg_depth = max_reorg_depth
        self.clock = clock
        self.batch = batch
        self.timeout_s = timeout_s
        self.peer_height: dict[Link, int] = {}
        self.inflight: InFlight | None = None
        self.paused = False  # parallel sync (window_sync) is catching up; stay out of its way
        self._ids = itertools.count(1)

    def synchronized(self) -> bool:
        """No connected peer has shown us a higher tip than ours (``peer_height`` holds only
        heights we checked: a tip we store, a served and verified block)."""
        return all(h <= self.host.height for h in self.peer_height.values())

    def best_peer_height(self) -> int:
        return max(self.peer_height.values(), default=self.host.height)

    def on_status(self, conn: Link, st: Status) -> None:
        """Record the claim only as far as we can check it: a tip we store at that height, or
        any height not above ours. A higher unknown tip waits for verification (window_sync
        asks the peer for it and calls ``saw_height`` once it verified)."""
        known = self.host.stored_hash(st.height) == st.tip_hash
        if known or st.height <= self.host.height:
            self.peer_height[conn] = st.height
        self._maybe_request()

    def saw_height(self, conn: Link, height: int) -> None:
        if self.peer_height.get(conn, -1) < height:
            self.peer_height[conn] = height

    def peer_gone(self, conn: Link) -> None:
        self.peer_height.pop(conn, None)
        if self.inflight is not None and self.inflight.conn is conn:
            self.inflight = None
            self._maybe_request()

    def request_gap(self, conn: Link, up_to: int) -> None:
        """An orphan at ``up_to`` arrived from ``conn``: fetch what lies between."""
        self.saw_height(conn, up_to)
        self._maybe_request(prefer=conn)

    def _take(self, conn: Link, req_id: int, kind: str, what: str) -> InFlight | None:
        inf = self.inflight
        if inf is None or inf.conn is not conn or inf.req_id != req_id or inf.kind != kind:
            self.host.penalize(conn, 5.0, f"unsolicited {what} response")
            return None
        self.inflight = None
        return inf

    def on_blocks(self, conn: Link, msg: Blocks) -> None:
        inf = self.inflight
        kind = inf.kind if inf is not None and inf.req_id == msg.req_id else "range"
        if self._take(conn, msg.req_id, kind, "Blocks") is None or inf is None:
            return
        if len(msg.blocks) > inf.count:
            self.host.penalize(conn, 20.0, "Blocks response longer than requested")
            return
        if kind == "branch":
            self.host.apply_branch(conn, msg.blocks)
            self._maybe_request()
            return
        for i, raw in enumerate(msg.blocks):
            nxt = msg.blocks[i + 1] if i + 1 < len(msg.blocks) else None  # pipelined
            outcome = self.host.apply_block(conn, raw, "sync", nxt)
            if outcome == "rejected":
                return  # apply_block already scored the peer; try again, maybe elsewhere
            if outcome == "orphan":
                if i == 0:  # its chain does not extend ours: a fork — find where we diverge
                    self._request_headers(conn)
                    return
                self.host.penalize(conn, 5.0, "sync response not contiguous")
                break
        if not msg.blocks and self.peer_height.get(conn, 0) > self.host.height:
            self.peer_height[conn] = self.host.height  # it claimed more than it served
            self.host.penalize(conn, 20.0, "claimed a tip it could not serve")
        self._maybe_request()

    def _request_headers(self, conn: Link) -> None:
        ours = self.host.height
        start = max(0, ours - self.max_reorg_depth)
        req = InFlight(
            conn, next(self._ids), start, ours - start + 1, self.clock() + self.timeout_s, "headers"
        )
        self.inflight = req
        conn.send(GetHeaders(req.req_id, req.start, req.count))

    def on_headers(self, conn: Link, msg: Headers) -> None:
        inf = self._take(conn, msg.req_id, "headers", "Headers")
        if inf is None:
            return
        try:
            headers = [msgspec.msgpack.decode(h, type=BlockHeader) for h in msg.headers]
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.host.penalize(conn, 20.0, "undecodable headers")
            return
        heights = [h.height for h in headers]
        if len(headers) > inf.count or heights != list(range(inf.start, inf.start + len(heights))):
            self.host.penalize(conn, 20.0, "headers not the range requested")
            return
        fork = self.host.fork_point(headers)
        theirs = self.peer_height.get(conn, 0)
        if fork is None:
            # Deeper than we may reorganise: we cannot follow this peer. Say so and stop asking.
            self.host.note(
                "fork_too_deep",
                f"peer's chain diverges from ours more than "
                f"{self.max_reorg_depth} blocks deep; not following it",
                peer_height=theirs,
                height=self.host.height,
            )
            self.peer_height[conn] = self.host.height
            self._maybe_request()
            return
        count = max(1, min(MAX_BRANCH, theirs - fork))
        req = InFlight(
            conn, next(self._ids), fork + 1, count, self.clock() + self.timeout_s, "branch"
        )
        self.inflight = req
        conn.send(GetBlocks(req.req_id, req.start, req.count))

    def tick(self) -> None:
        inf = self.inflight
        if inf is not None and self.clock() > inf.deadline:
            self.inflight = None
            self.host.penalize(inf.conn, 10.0, f"sync request stalled past {self.timeout_s:g} s")
            self.peer_height.pop(inf.conn, None)  # until it sends a fresh Status
        self._maybe_request()

    def _maybe_request(self, prefer: Link | None = None) -> None:
        if self.inflight is not None or self.paused:
            return
        ours = self.host.height
        ahead = [(h, c) for c, h in self.peer_height.items() if h > ours and c.is_open]
        if not ahead:
            return
        if prefer is not None and any(c is prefer for _, c in ahead):
            conn, best = prefer, self.peer_height[prefer]
        else:
            best, conn = max(ahead, key=lambda x: x[0])
        count = min(self.batch, best - ours)
        req = InFlight(conn, next(self._ids), ours + 1, count, self.clock() + self.timeout_s)
        self.inflight = req
        conn.send(GetBlocks(req.req_id, req.start, req.count))
