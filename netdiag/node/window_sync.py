"""Catch-up sync, part 2: range discovery, a parallel download window, sequential verification.

In the mould of Bitcoin Core's block download:

- **Discovery.** Peers announce ``Status(height, tip)``. A claim counts only once the peer has
  served its tip block and that block's hash and producer signature verify (a signed block at
  that height, by a genesis validator). The target is the highest height that at least two
  verified peers reach (one, if only one peer is verified) — never one unverified claim.
- **Download window.** Heights ``tip+1 .. tip+window`` are cut into chunks and spread over
  the peers that have them, at most ``per_peer`` requests in flight per peer, least loaded
  first. Blocks land in a buffer, never in the store.
- **Verify, commit or retry.** Whenever the buffer holds ``tip+1``, the contiguous run from
  there is verified in order against the stored tip (``segment.verify_segment``); the valid
  prefix is committed in one SQLite transaction. On a break, the block that broke and every
  buffered block from the same peer above it are discarded, that peer is banned, and the range
  is fetched again from others.
- **Stalls.** Each peer has its own request timeout, 2 s at first, doubled on every stall up
  to 64 s and halved again by timely answers. A stalled request is reassigned to another peer
  (its late answer is still used if it comes); a peer that stalls repeatedly gets no new work
  for a while, so progress never waits on one slow peer.

Near the tip the part-1 ``SequentialSync`` stays in charge (gossip gaps, forks and reorgs);
this engine takes over when the agreed target is more than ``min_distance`` blocks ahead and
pauses the sequential one while it works. Verification runs in bounded steps scheduled on the
event loop, so gossip, API and the entropy check keep running during a long catch-up.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable

from netdiag.node.link import Link
from netdiag.node.messages import Blocks, GetBlocks, Headers, Status
from netdiag.node.model import Block, decode_single_block
from netdiag.node.segment import authentic
from netdiag.node.sigpool import SigCheck
from netdiag.node.sync import SequentialSync
from netdiag.node.window_commit import SegmentCommit
from netdiag.node.window_state import (
    PENALTY_UNSERVED_CLAIM,
    PHASES,
    REQ_ID_BASE,
    PeerSync,
    Req,
    SyncStats,
    WindowHost,
    WindowParams,
    decode_range,
    short,
)

__all__ = ["PHASES", "ParallelSync", "PeerSync", "WindowHost", "WindowParams"]


class ParallelSync(SegmentCommit):
    def __init__(
        self,
        host: WindowHost,
        clock: Callable[[], float],
        params: WindowParams,
        batch: int = 64,
        timeout_s: float = 5.0,
        max_reorg_depth: int = 64,
    ) -> None:
        self.host = host
        self.clock = clock
        self.p = params
        self.follower = SequentialSync(host, clock, batch, timeout_s, max_reorg_depth)
        self.peers: dict[Link, PeerSync] = {}
        self.reqs: dict[int, Req] = {}
        self.late: dict[int, Req] = {}  # timed out, reassigned; an answer is still welcome
        self.buffer: dict[int, tuple[Block, Link]] = {}
        self.excluded: dict[int, set[Link]] = {}  # chunk start -> peers that failed it
        self.target = 0  # agreed height we are syncing to; 0 = none
        self.target_hash = b""
        self._step_phase = ""  # "verifying" / "committing" while a verify step runs
        self.fork_hold_until = 0.0  # the follower is resolving a fork; do not retarget
        self.stats = SyncStats()
        self._ids = itertools.count(REQ_ID_BASE)
        self._verify_scheduled = False
        self._proven: set[SigCheck] = set()
        self._proving = False  # window_commit._prove_ahead: a batch at the pool
        self._rng = random.Random()

    # -- views -----------------------------------------------------------------------------

    @property
    def peer_height(self) -> dict[Link, int]:
        return self.follower.peer_height

    def synchronized(self) -> bool:
        """No verified height above ours (unverified claims do not count)."""
        return not self.active and self.follower.synchronized()

    def head_height(self) -> int:
        """Best height the network has shown us in a form we could check."""
        verified = [p.verified for p in self.peers.values()]
        return max([self.chain.height, self.target, *verified])

    def best_peer_height(self) -> int:
        return max(self.follower.best_peer_height(), self.head_height())

    # -- entry points (same as SequentialSync) ---------------------------------------------

    def on_status(self, conn: Link, st: Status) -> None:
        """A claim is not a fact: a height above ours counts (for ``synchronized``, sync
        targets and production) only once the peer has served that tip and it verified."""
        p = self._peer(conn)
        p.claimed, p.claimed_tip = st.height, st.tip_hash
        if st.height > self.chain.height:
            self._verify_claim(p)
            if st.height > self.chain.height + self.p.min_distance and not p.failed_claims:
                self.follower.paused = self.clock() >= self.fork_hold_until
        self.follower.on_status(conn, st)

    def _discovering(self) -> bool:
        """Verifying a far claim of a peer that has not failed one: the follower waits."""
        floor = self.chain.height + self.p.min_distance
        return any(
            p.tip_req is not None and p.claimed > floor and not p.failed_claims
            for p in self.peers.values()
        )

    def saw_height(self, conn: Link, height: int) -> None:
        self.follower.saw_height(conn, height)

    def saw_tip(self, conn: Link, block: Block) -> bool:
        """An authentic block far ahead of our tip (e.g. gossip): a verified claim from
        ``conn``. Returns False if it is not authentic."""
        if not self.authentic(block):
            return False
        p = self._peer(conn)
        if block.height > p.verified:
            p.verified, p.verified_tip = block.height, block.hash
            p.claimed = max(p.claimed, block.height)
        self.follower.saw_height(conn, block.height)
        self._retarget()
        self._fill()
        return True

    def peer_gone(self, conn: Link) -> None:
        self.follower.peer_gone(conn)
        self.peers.pop(conn, None)
        for rid, r in list(self.reqs.items()):
            if r.conn is conn:
                del self.reqs[rid]
        for rid, r in list(self.late.items()):
            if r.conn is conn:
                del self.late[rid]
        self._retarget()
        self._fill()

    def request_gap(self, conn: Link, up_to: int) -> None:
        if not self.active:
            self.follower.request_gap(conn, up_to)

    def owns(self, req_id: int) -> bool:
        return req_id in self.reqs or req_id in self.late

    def on_blocks(self, conn: Link, msg: Blocks) -> None:
        if not self.owns(msg.req_id):
            self.follower.on_blocks(conn, msg)
            return
        timely = msg.req_id in self.reqs
        req = self.reqs.pop(msg.req_id) if timely else self.late.pop(msg.req_id)
        if req.conn is not conn:
            self.host.penalize(conn, 5.0, "answered another peer's sync request")
            return
        p = self.peers.get(conn)
        if p is None:
            return
        if timely and req.kind == "range":
            p.inflight = max(0, p.inflight - 1)  # a late one was released when it timed out
        if req.kind == "tip":
            p.tip_req = None
            self._on_tip(p, req, msg)
        else:
            self._on_range(p, req, msg)

    def on_headers(self, conn: Link, msg: Headers) -> None:
        self.follower.on_headers(conn, msg)

    def tick(self) -> None:
        now = self.clock()
        for rid, r in list(self.reqs.items()):
            if now <= r.deadline:
                continue
            del self.reqs[rid]
            p = self.peers.get(r.conn)
            if p is None:
                continue
            if r.kind == "tip":
                p.tip_req = None
                p.claimed = max(p.verified, self.chain.height)  # until its next Status
                p.failed_claims += 1
                self.host.penalize(
                    r.conn,
                    PENALTY_UNSERVED_CLAIM,
                    f"did not serve its claimed tip {r.start} within {r.deadline - r.sent_at:g} s",
                )
                continue
            p.inflight = max(0, p.inflight - 1)
            self.late[rid] = r
            self._stalled(p, r, now)
        for rid, r in list(self.late.items()):
            if now > r.deadline + self.p.timeout_max_s:
                del self.late[rid]
        if self.target and not self.active:
            self._finished()
        self._retarget()
        holding = now < self.fork_hold_until
        self.follower.paused = not holding and (self.active or self._discovering())
        if self.active:
            self._schedule_verify()  # resumes verification held while the disk was behind
            self._fill()
        else:
            self.follower.tick()

    # -- discovery -------------------------------------------------------------------------

    def _peer(self, conn: Link) -> PeerSync:
        p = self.peers.get(conn)
        if p is None:
            p = self.peers[conn] = PeerSync(conn, timeout_s=self.p.timeout_min_s)
        return p

    def authentic(self, block: Block) -> bool:
        return authentic(block, self.chain.genesis)

    def resolve_fork_with(self, conn: Link) -> None:
        """Ask the follower to find where ``conn``'s chain forks from ours and adopt it if it
        is the longer valid one (the entropy check's resync when our seed block differs)."""
        if self.follower.inflight is None:
            self.follower._request_headers(conn)

    def _verify_claim(self, p: PeerSync) -> None:
        if p.tip_req is not None or p.verified >= p.claimed:
            return
        req = self._send(p, p.claimed, 1, "tip")
        p.tip_req = req.req_id

    def _on_tip(self, p: PeerSync, req: Req, msg: Blocks) -> None:
        block = decode_single_block(msg.blocks)
        if block is None or block.height != req.start or not self.authentic(block):
            why = "no block" if not msg.blocks else "a block that does not verify"
            self.host.note(
                "sync_claim_rejected",
                f"peer {short(p.conn.peer_id or b'')} claimed height {req.start} but served "
                f"{why} for it; its claim is ignored",
                peer=(p.conn.peer_id or b"").hex(),
                claimed=req.start,
            )
            self.host.penalize(p.conn, PENALTY_UNSERVED_CLAIM, "claimed a tip it could not serve")
            p.failed_claims += 1
            p.claimed = max(p.verified, self.chain.height)
            self.follower.peer_height[p.conn] = min(
                self.follower.peer_height.get(p.conn, p.claimed), p.claimed
            )
            self._retarget()
            self._fill()
            return
        p.verified, p.verified_tip = block.height, block.hash
        self.follower.saw_height(p.conn, block.height)  # a verified height: worth following
        self._retarget()
        self._fill()

    def _retarget(self) -> None:
        # Agreement: two verified peers must reach the target — one only if just one peer
        # claims to be that far ahead. Claims still being verified count as "wait".
        floor = self.chain.height + self.p.min_distance
        claimants = [p for p in self.peers.values() if p.conn.is_open and p.claimed > floor]
        verified = sorted((p.verified for p in claimants if p.verified > floor), reverse=True)
        need = min(2, len(claimants))
        if need == 0 or len(verified) < need or self.clock() < self.fork_hold_until:
            return
        agreed = verified[need - 1]
        if agreed > self.target and agreed > self.chain.height + self.p.min_distance:
            if not self.active:
                self.stats = SyncStats(started_at=self.clock())
                self.host.info(
                    "sync_started",
                    f"catching up from {self.chain.height} to {agreed} "
                    f"({need} verified peer{'s' if need > 1 else ''} agree), window "
                    f"{self.p.window}, {self.p.chunk} blocks per request, "
                    f"{self.p.per_peer} per peer",
                    height=self.chain.height,
                    target=agreed,
                    agreeing_peers=need,
                )
            self.target = agreed
            self.follower.paused = True
        elif (
            self.active
            and agreed < self.target
            and not any(p.verified >= self.target for p in self.peers.values())
        ):
            self.target = max(agreed, self.chain.height)  # the peers that had it are gone

    # -- download window -------------------------------------------------------------------

    def _send(self, p: PeerSync, start: int, count: int, kind: str) -> Req:
        now = self.clock()
        req = Req(next(self._ids), p.conn, start, count, now, now + p.timeout_s, kind)
        self.reqs[req.req_id] = req
        p.conn.send(GetBlocks(req.req_id, start, count))
        return req

    def _fill(self) -> None:
        if not self.active:
            return
        tip = self.chain.height
        hi = min(self.target, tip + self.p.window)
        covered: set[int] = set(self.buffer)
        for r in self.reqs.values():
            if r.kind == "range":
                covered.update(range(r.start, r.start + r.count))
        now = self.clock()
        h = tip + 1
        while h <= hi:
            if h in covered:
                h += 1
                continue
            end = h
            while end <= hi and end not in covered and end - h < self.p.chunk:
                end += 1
            p = self._pick(h, now)
            if p is None:
                h = end  # its peers are busy; their responses call _fill again
                continue
            count = min(end - h, max(p.verified, p.claimed) - h + 1)
            self._send(p, h, count, "range")
            p.inflight += 1
            covered.update(range(h, h + count))
            h += count

    def _pick(self, start: int, now: float) -> PeerSync | None:
        """Least-loaded peer that has ``start``. Peers that stalled on this range, or are
        benched for stalling, are asked only when no other peer has the range at all — never
        while a good peer is merely busy — so one slow peer cannot hold the window, yet a
        node with a single (slow) peer still makes progress."""
        bad = self.excluded.get(start, set())
        capable = [
            p
            for p in self.peers.values()
            if p.conn.is_open
            and max(p.verified, p.claimed) >= start
            and p.benched_until != float("inf")  # banned
        ]
        good = [p for p in capable if p.benched_until <= now and p.conn not in bad]
        pool = good or capable
        cands = [p for p in pool if p.inflight < self.p.per_peer]
        if not cands:
            return None
        self._rng.shuffle(cands)
        return min(cands, key=lambda p: (p.inflight, p.timeout_s))

    def _on_range(self, p: PeerSync, req: Req, msg: Blocks) -> None:
        blocks, offence = decode_range(msg.blocks, req.start, req.count)
        if offence:
            self._ban(p, offence)
            return
        if not blocks:
            self.excluded.setdefault(req.start, set()).add(p.conn)
            self.host.penalize(p.conn, 20.0, f"served nothing for {req.start} it claimed to have")
            p.claimed = min(p.claimed, req.start - 1)
            p.verified = min(p.verified, req.start - 1)
            self._fill()
            return
        # A timely answer: the peer's timeout relaxes back towards the minimum.
        if self.clock() <= req.deadline:
            p.timeout_s = max(self.p.timeout_min_s, p.timeout_s / 2)
            p.stalls = 0
        p.blocks_served += len(blocks)
        tip = self.chain.height
        for b in blocks:
            if b.height > tip and b.height not in self.buffer:
                self.buffer[b.height] = (b, p.conn)
                self.stats.blocks_downloaded += 1
        self._schedule_verify()
        self._fill()

    def _stalled(self, p: PeerSync, r: Req, now: float) -> None:
        self.stats.stalls += 1
        self.excluded.setdefault(r.start, set()).add(p.conn)
        old = r.deadline - r.sent_at
        if p.last_stall_at != now:  # several requests expiring together are one stall
            p.last_stall_at = now
            p.timeout_s = min(self.p.timeout_max_s, p.timeout_s * 2)
            p.stalls += 1
            self.host.penalize(p.conn, 2.0, f"sync request stalled past {old:g} s")
        benched = p.stalls >= self.p.stalls_to_bench
        if benched:
            p.benched_until = now + self.p.bench_s
        head = r.start == self.chain.height + 1
        self.stats.last_reason = (
            f"request {r.start}..{r.start + r.count - 1} to peer "
            f"{short(p.conn.peer_id or b'')} stalled past {old:g} s"
        )
        self.host.note(
            "sync_stall",
            f"{self.stats.last_reason}{' (it held the window back)' if head else ''}; "
            f"reassigning to another peer; its timeout is now {p.timeout_s:g} s"
            + (f"; no new work for it for {self.p.bench_s:g} s" if benched else ""),
            peer=(p.conn.peer_id or b"").hex(),
            start=r.start,
            count=r.count,
            timeout_s=p.timeout_s,
            benched=benched,
        )

    def _ban(self, p: PeerSync, why: str) -> None:
        self.stats.bans += 1
        self.stats.last_reason = why
        for rid, r in list(self.reqs.items()):
            if r.conn is p.conn:
                del self.reqs[rid]
        p.inflight = 0
        p.benched_until = float("inf")
        self.host.ban(p.conn, f"sync: {why}")
        self._fill()

    @property
    def phase(self) -> str:
        if self._step_phase:
            return self._step_phase
        if self._verify_scheduled:
            return "verifying"  # blocks at tip+1 wait for the next verify step
        if self.active:
            return "downloading"
        if self._discovering():
            return "discovering"
        return "following"
