"""Parallel sync, verification and commit: the contiguous buffered run from ``tip+1`` is
verified in order against the stored tip in bounded steps scheduled on the loop, its valid
prefix committed in one transaction; a break discards what that peer served and bans it; an
authentic fork at the anchor goes to the sequential follower. A base of ``ParallelSync``
(window_sync.py), which owns the state declared here."""

from __future__ import annotations

import time
from collections.abc import Callable

from netdiag.node.chain import Chain
from netdiag.node.crypto import preverified
from netdiag.node.errors import ValidationError
from netdiag.node.link import Link
from netdiag.node.model import Block
from netdiag.node.segment import ChainBreak, verify_segment
from netdiag.node.sigpool import SigCheck, sig_checks
from netdiag.node.store import MAX_PENDING_BLOCKS
from netdiag.node.sync import SequentialSync
from netdiag.node.window_state import PeerSync, SyncStats, WindowHost, WindowParams, short

PROVE_AHEAD_STEPS = 4  # one pool batch proves this many verify steps' blocks: fewer, larger trips


class SegmentCommit:
    host: WindowHost
    clock: Callable[[], float]
    p: WindowParams
    follower: SequentialSync
    peers: dict[Link, PeerSync]
    buffer: dict[int, tuple[Block, Link]]
    excluded: dict[int, set[Link]]
    target: int
    fork_hold_until: float
    stats: SyncStats
    _step_phase: str
    _verify_scheduled: bool
    _proven: set[SigCheck]  # the pool's verified triples for the blocks being verified

    @property
    def chain(self) -> Chain:
        return self.host.chain

    @property
    def active(self) -> bool:
        return self.target > self.chain.height

    def _fill(self) -> None:
        raise NotImplementedError

    def _ban(self, p: PeerSync, why: str) -> None:
        raise NotImplementedError

    def _schedule_verify(self) -> None:
        """The next verify step, on the loop; when the pool has workers and the run has enough
        signatures not yet proven, they are proven first by the pool, waited for off the loop
        (``host.off_loop``): the loop serves the API meanwhile, and the step finds them in
        ``_proven`` (crypto.preverified). Anything else is verified inline, within the step's
        time budget."""
        if self._verify_scheduled or (self.chain.height + 1) not in self.buffer:
            return
        if self.chain.store.pending_blocks >= MAX_PENDING_BLOCKS:
            return  # the disk is behind (a locked database): the next tick tries again
        self._verify_scheduled = True
        sigs = self.host.sigs
        ahead = self.p.verify_step * PROVE_AHEAD_STEPS
        checks = sig_checks(self._run(ahead)[0]) if sigs.parallel else []
        todo = [c for c in checks if c not in self._proven]
        if len(todo) < sigs.min_batch:
            self.host.schedule(self.verify_step)
            return
        self._proven = {c for c in checks if c in self._proven}  # only the run's: bounded

        def prove() -> list[SigCheck]:
            try:
                return sigs.prove(todo)
            except Exception:  # a broken pool: the step verifies inline, as without one
                return []

        def proven(ok: list[SigCheck]) -> None:
            self._proven.update(ok)
            self.host.schedule(self.verify_step)

        self.host.off_loop(prove, proven)

    def _run(self, most: int = 0) -> tuple[list[Block], list[Link]]:
        """The contiguous buffered blocks from tip+1, at most ``most`` (default
        ``verify_step``), and who sent each."""
        most = most or self.p.verify_step
        run: list[Block] = []
        sources: list[Link] = []
        h = self.chain.height + 1
        while h in self.buffer and len(run) < most:
            b, c = self.buffer[h]
            run.append(b)
            sources.append(c)
            h += 1
        return run, sources

    def verify_step(self) -> None:
        """Verify (and commit) the contiguous buffered blocks from tip+1: at most
        ``verify_step`` of them and, past the first, no longer than ``verify_budget_s``."""
        self._verify_scheduled = False
        chain = self.chain
        for h in [h for h in self.buffer if h <= chain.height]:
            del self.buffer[h]
        run, sources = self._run()
        if not run:
            return
        deadline = time.perf_counter() + self.p.verify_budget_s
        try:
            self._step_phase = "verifying"
            with preverified(self._proven):
                res = verify_segment(chain, run, self.host.now_ms(), None, deadline)
            if res.verified:
                self._step_phase = "committing"
                chain.append_verified(res.verified)
                for b in res.verified:
                    del self.buffer[b.height]
                self.stats.blocks_committed += len(res.verified)
                self.stats.segments_committed += 1
                self.host.committed_segment(res.verified, "sync")
        finally:
            self._step_phase = ""
        if res.error is not None:
            i = len(res.verified)
            self._on_break(run[i], sources[i], res.error, res.fork_at_anchor)
        if not self.active and self.target:
            self._finished()
        self._schedule_verify()
        self._fill()

    def _on_break(self, block: Block, conn: Link, err: ValidationError, fork: bool) -> None:
        peer = conn.peer_id or b""
        if fork:
            # Authentic, but built on another branch than our tip: the follower resolves
            # forks (headers, fork point, reorg within the limit). Not a forgery, no ban.
            self.host.note(
                "sync_fork",
                f"block {block.height} from peer {short(peer)} builds on "
                f"{short(block.header.prev_hash)}, not on our tip: handing over to fork "
                "resolution",
                height=block.height,
                peer=peer.hex(),
            )
            self.buffer.clear()
            self.target = 0
            self.fork_hold_until = self.clock() + 4 * self.p.timeout_min_s + 2.0
            self.follower.paused = False
            self.follower.saw_height(conn, self.peers[conn].claimed if conn in self.peers else 0)
            return
        self.stats.breaks += 1
        detail = (
            err.detail
            if isinstance(err, ChainBreak)
            else (f"invalid block at {block.height} ({err.reason}): {err.detail}")
        )
        msg = f"{detail} from peer {short(peer)}"
        self.stats.last_reason = msg
        dropped = [h for h, (_, c) in self.buffer.items() if c is conn and h >= block.height]
        for h in dropped:
            del self.buffer[h]
        self.stats.refetched_blocks += len(dropped)
        self.host.note(
            "sync_chain_break",
            f"{msg}; discarding {len(dropped)} buffered blocks it served from "
            f"{block.height}, refetching from other peers and banning it",
            height=block.height,
            reason=err.reason,
            peer=peer.hex(),
            discarded=len(dropped),
        )
        p = self.peers.get(conn)
        if p is not None:
            self._ban(p, msg)
        else:
            self.host.ban(conn, f"sync: {msg}")

    def _finished(self) -> None:
        s = self.stats
        s.finished_at = self.clock()
        took = s.finished_at - (s.started_at or s.finished_at)
        self.host.info(
            "sync_finished",
            f"caught up to {self.chain.height} in {took:.2f} s: {s.blocks_committed} blocks "
            f"committed in {s.segments_committed} segments, {s.breaks} chain breaks, "
            f"{s.stalls} stalls, {s.bans} bans",
            height=self.chain.height,
            seconds=round(took, 3),
            blocks=s.blocks_committed,
            breaks=s.breaks,
            stalls=s.stalls,
            bans=s.bans,
        )
        self.target = 0
        self.excluded.clear()
        self.follower.paused = False
