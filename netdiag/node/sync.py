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

from netdiag.node.messages import Blocks, GetBlocks, Status
from netdiag.node.transport import Connection


class SyncHost(Protocol):
    @property
    def height(self) -> int: ...
    def apply_block(self, conn: Connection, raw: bytes, source: str) -> str: ...
    def penalize(self, conn: Connection, amount: float, reason: str) -> None: ...


@dataclass
class InFlight:
    conn: Connection
    req_id: int
    start: int
    count: int
    deadline: float


class SequentialSync:
    def __init__(
        self, host: SyncHost, clock: Callable[[], float], batch: int = 64, timeout_s: float = 5.0
    ) -> None:
        self.host = host
        self.clock = clock
        self.batch = batch
        self.timeout_s = timeout_s
        self.peer_height: dict[Connection, int] = {}
        self.inflight: InFlight | None = None
        self._ids = itertools.count(1)

    def synchronized(self) -> bool:
        """No connected peer claims a higher tip than ours."""
        return all(h <= self.host.height for h in self.peer_height.values())

    def best_peer_height(self) -> int:
        return max(self.peer_height.values(), default=self.host.height)

    def on_status(self, conn: Connection, st: Status) -> None:
        self.peer_height[conn] = st.height
        self._maybe_request()

    def saw_height(self, conn: Connection, height: int) -> None:
        if self.peer_height.get(conn, -1) < height:
            self.peer_height[conn] = height

    def peer_gone(self, conn: Connection) -> None:
        self.peer_height.pop(conn, None)
        if self.inflight is not None and self.inflight.conn is conn:
            self.inflight = None
            self._maybe_request()

    def request_gap(self, conn: Connection, up_to: int) -> None:
        """An orphan at ``up_to`` arrived from ``conn``: fetch what lies between."""
        self.saw_height(conn, up_to)
        self._maybe_request(prefer=conn)

    def on_blocks(self, conn: Connection, msg: Blocks) -> None:
        inf = self.inflight
        if inf is None or inf.conn is not conn or inf.req_id != msg.req_id:
            self.host.penalize(conn, 5.0, "unsolicited Blocks response")
            return
        self.inflight = None
        if len(msg.blocks) > inf.count:
            self.host.penalize(conn, 20.0, "Blocks response longer than requested")
            return
        for raw in msg.blocks:
            outcome = self.host.apply_block(conn, raw, "sync")
            if outcome == "rejected":
                return  # apply_block already scored the peer; try again, maybe elsewhere
            if outcome == "orphan":
                self.host.penalize(conn, 5.0, "sync response not contiguous with our tip")
                break
        if not msg.blocks and self.peer_height.get(conn, 0) > self.host.height:
            self.peer_height[conn] = self.host.height  # it claimed more than it served
            self.host.penalize(conn, 5.0, "empty Blocks response below its claimed height")
        self._maybe_request()

    def tick(self) -> None:
        inf = self.inflight
        if inf is not None and self.clock() > inf.deadline:
            self.inflight = None
            self.host.penalize(inf.conn, 10.0, f"sync request stalled past {self.timeout_s:g} s")
            self.peer_height.pop(inf.conn, None)  # until it sends a fresh Status
        self._maybe_request()

    def _maybe_request(self, prefer: Connection | None = None) -> None:
        if self.inflight is not None:
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
