"""Parallel sync, verification and commit: the contiguous buffered run from ``tip+1`` is
verified in order against the stored tip in bounded steps scheduled on the loop, its valid
prefix committed in one transaction; a break discards what that peer served and bans it; an
authentic fork at the anchor goes to the sequential follower. A base of ``ParallelSync``
(window_sync.py), which owns the state declared here."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

from netdiag.node.chain import Chain
from netdiag.node.crypto import preverified
from netdiag.node.errors import ValidationError
from netdiag.node.link import Link
from netdiag.node.model import Block
from netdiag.node.segment import ChainBreak, verify_segment
from netdiag.node.sigpool import SigCheck, SigPool, sig_checks
from netdiag.node.store import MAX_PENDING_BLOCKS
from netdiag.node.sync import SequentialSync
from netdiag.node.window_state import PeerSync, SyncStats, WindowHost, WindowParams, short


def _prove(sigs: SigPool, items: list[SigCheck]) -> list[SigCheck]:
    """Off the loop: the triples the pool verified; none from a broken pool (the steps then
    verify inline, as without one)."""
    try:
        return sigs.prove(items)
    except Exception:
        return []


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
    _proving: bool  # a _prove_ahead batch is at the pool

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
        """The next verify step, on the loop. With pool workers the run's signatures (up to
        ``PROVE_AHEAD_STEPS`` steps ahead) are proven by the pool off the loop
        (``host.off_loop``) and the steps find them in ``_proven`` (crypto.preverified): when
        the next step's are proven already, the step runs now while the rest of the run is
        proven meanwhile (``_prove_ahead``); else the step waits for its batch (the loop serves
        the API meanwhile). Anything not proven is verified inline, within the step's time
        budget; one batch is in flight at a time."""
        if self._verify_scheduled or (self.chain.height + 1) not in self.buffer:
            return
        if self.chain.store.pending_blocks >= MAX_PENDING_BLOCKS:
            return  # the disk is behind (a locked database): the next tick tries again
        sigs = self.host.sigs
        if not sigs.parallel:
            self._verify_scheduled = True
            self.host.schedule(self.verify_step)
            return
        run = self._run(self.p.verify_step * PROVE_AHEAD_STEPS)[0]
        checks = sig_checks(run)
        step = [c for c in sig_checks(run[: self.p.verify_step]) if c not in self._proven]
        if len(step) < sigs.min_batch:  # proven (or not worth a batch): verify it now
            self._verify_scheduled = True
            self.host.schedule(self.verify_step)
            self._prove_ahead(checks)
            return
        if self._proving:
            return  # the batch in flight has them: its answer schedules the step
        self._verify_scheduled = True
        self._proven &= set(checks)  # only the run's: bounded
        todo = [c for c in checks if c not in self._proven]

        def proven(ok: list[SigCheck]) -> None:
            self._proven.update(ok)
            self.host.schedule(self.verify_step)

        self.host.off_loop(partial(_prove, sigs, todo), proven)

    def _prove_ahead(self, checks: list[SigCheck]) -> None:
        """The run's signatures not yet proven go to the pool while steps verify the proven
        ones; the answer schedules the next step."""
        sigs = self.host.sigs
        if self._proving:
            return
        self._proven &= set(checks)
        rest = [c for c in checks if c not in self._proven]
        if len(rest) < sigs.min_batch:
            return
        self._proving = True

        def proven(ok: list[SigCheck]) -> None:
            self._proving = False
            self._proven.update(ok)
            self._schedule_verify()

        self.host.off_loop(partial(_prove, sigs, rest), proven)

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
