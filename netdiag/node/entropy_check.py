"""Entropy consensus check at epoch boundaries.

When the boundary block that seeds the next epoch's producer draw is committed, the node sends
``EntropyRequest(seed_height, its entropy hash)`` to a random sample of peers and collects
``EntropyResponse``s for a bounded time (default 300 ms). Votes are counted with our own:

- ``agree``: at least 2/3 of the votes carry our hash — proceed (producing stays or resumes);
- ``mismatch``: at least 2/3 carry one other hash — stop producing, fetch the disputed seed
  block from a peer of that majority, check it (signature, hash = the majority's entropy),
  then recompute our entropy from it (our chain has it: our entropy was wrong) or hand the
  peer to fork resolution (our chain diverged there), and re-check;
- ``split``: no hash reaches 2/3 — stop producing, re-check after a back-off;
- ``unverified``: nobody answered in time — proceed, logged (a lone node cannot be outvoted).

Nothing here waits on the event loop: requests go out, responses are tallied as they come,
and the verdict is taken when the deadline passes, so block processing never blocks on it.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from netdiag.node.link import Link
from netdiag.node.messages import Blocks, EntropyRequest, EntropyResponse, GetBlocks
from netdiag.node.model import Block, decode_single_block, entropy_of

REQ_ID_BASE = 1 << 50  # never collides with sync request ids
OUTCOMES = ("agree", "mismatch", "split", "unverified")


def short(b: bytes) -> str:
    return "0x" + b[:6].hex() + "…"


class EntropyHost(Protocol):
    def entropy_peers(self) -> list[Link]: ...
    def local_entropy(self, seed_height: int) -> bytes | None: ...
    def recompute_entropy(self, seed_height: int) -> bytes | None: ...
    def stored_hash(self, seed_height: int) -> bytes | None: ...
    def authentic(self, block: Block) -> bool: ...
    def resolve_fork_with(self, conn: Link) -> None: ...
    def entropy_event(self, event: str, msg: str, level: str, **fields: object) -> None: ...


@dataclass
class EntropyParams:
    sample: int = 8  # peers asked per check
    timeout_s: float = 0.3  # collection time
    recheck_backoff_s: float = 1.0


@dataclass
class Round:
    seed_height: int
    entropy: bytes
    started: float
    deadline: float
    attempt: int
    asked: dict[int, Link]  # req_id -> peer
    answers: dict[Link, bytes] = field(default_factory=dict)
    abstained: int = 0


class EntropyCheck:
    def __init__(
        self,
        host: EntropyHost,
        clock: Callable[[], float],
        params: EntropyParams,
        rng: random.Random | None = None,
    ) -> None:
        self.host = host
        self.clock = clock
        self.p = params
        self.rng = rng or random.Random()
        self.halted = False  # producing stopped until a check agrees again
        self.round: Round | None = None
        self.resync: tuple[int, Link, int, bytes] | None = None  # req, peer, height, hash
        self.recheck_at: tuple[float, int] | None = None  # (when, seed_height)
        self.outcomes: Counter[str] = Counter()
        self.votes: Counter[str] = Counter()
        self.timeouts = 0  # asked peers that did not answer in time
        self.history: deque[dict[str, object]] = deque(maxlen=8)
        self._attempt = 0
        self.deferred: list[tuple[float, Link, EntropyRequest]] = []
        self._ids = itertools.count(REQ_ID_BASE)

    @property
    def may_produce(self) -> bool:
        return not self.halted

    def owns(self, req_id: int) -> bool:
        return self.resync is not None and self.resync[0] == req_id

    # -- starting a round ------------------------------------------------------------------

    def on_boundary(self, seed_height: int, attempt: int = 0) -> None:
        entropy = self.host.local_entropy(seed_height)
        if entropy is None:
            return
        if self.round is not None:
            self._finish()  # a new boundary supersedes a round still collecting
        peers = self.host.entropy_peers()
        sample = self.rng.sample(peers, min(self.p.sample, len(peers)))
        now = self.clock()
        asked: dict[int, Link] = {}
        for conn in sample:
            rid = next(self._ids)
            asked[rid] = conn
            conn.send(EntropyRequest(rid, seed_height, entropy))
        self.round = Round(seed_height, entropy, now, now + self.p.timeout_s, attempt, asked)
        if not sample:
            self._finish()

    # -- answering and collecting ----------------------------------------------------------

    def answer(self, conn: Link, req: EntropyRequest) -> None:
        """Answer with our entropy; if we have not committed the seed block yet (the asker
        produced it a moment ago), hold the question until we do, for at most the asker's
        collection time, then abstain."""
        mine = self.host.local_entropy(req.seed_height)
        if mine is not None:
            conn.send(EntropyResponse(req.req_id, req.seed_height, mine))
            return
        if len(self.deferred) >= 64:
            conn.send(EntropyResponse(req.req_id, req.seed_height, b""))
            return
        self.deferred.append((self.clock() + self.p.timeout_s, conn, req))

    def on_height(self) -> None:
        """A block was committed: answer deferred questions we now can."""
        keep: list[tuple[float, Link, EntropyRequest]] = []
        for until, conn, req in self.deferred:
            mine = self.host.local_entropy(req.seed_height)
            if mine is not None:
                conn.send(EntropyResponse(req.req_id, req.seed_height, mine))
            else:
                keep.append((until, conn, req))
        self.deferred = keep

    def on_response(self, conn: Link, msg: EntropyResponse) -> bool:
        """Tally a response; False if it answers nothing we asked (caller may score it)."""
        r = self.round
        if r is None or r.asked.get(msg.req_id) is not conn or msg.seed_height != r.seed_height:
            return False
        if conn in r.answers:
            return False
        if msg.entropy:
            r.answers[conn] = msg.entropy
        else:
            r.abstained += 1
        if len(r.answers) + r.abstained == len(r.asked):
            self._finish()  # everyone answered: no need to wait for the deadline
        return True

    def tick(self) -> None:
        now = self.clock()
        for _, conn, req in [d for d in self.deferred if d[0] <= now]:
            conn.send(EntropyResponse(req.req_id, req.seed_height, b""))  # abstain
        self.deferred = [d for d in self.deferred if d[0] > now]
        if self.round is not None and now >= self.round.deadline:
            self._finish()
        if self.recheck_at is not None and now >= self.recheck_at[0] and self.round is None:
            seed_height = self.recheck_at[1]
            self.recheck_at = None
            self.on_boundary(seed_height, attempt=self._attempt + 1)

    def _finish(self) -> None:
        r = self.round
        if r is None:
            return
        self.round = None
        self._attempt = r.attempt
        no_answer = len(r.asked) - len(r.answers) - r.abstained
        self.timeouts += no_answer
        tally: Counter[bytes] = Counter(r.answers.values())
        tally[r.entropy] += 1  # our own vote
        votes = sum(tally.values())
        agree = tally[r.entropy]
        disagree = votes - agree
        top, top_n = tally.most_common(1)[0]
        if votes == 1:
            outcome = "unverified"
        elif agree * 3 >= votes * 2:
            outcome = "agree"
        elif top != r.entropy and top_n * 3 >= votes * 2:
            outcome = "mismatch"
        else:
            outcome = "split"
        self.outcomes[outcome] += 1
        self.votes["agree"] += agree - 1
        self.votes["disagree"] += disagree
        self.votes["abstain"] += r.abstained
        self.votes["no_answer"] += no_answer
        elapsed_ms = round((self.clock() - r.started) * 1000, 1)
        rec: dict[str, object] = {
            "seed_height": r.seed_height,
            "attempt": r.attempt,
            "outcome": outcome,
            "entropy": r.entropy.hex(),
            "agree": agree,
            "disagree": disagree,
            "abstain": r.abstained,
            "no_answer": no_answer,
            "elapsed_ms": elapsed_ms,
        }
        self.history.append(rec)
        fields = {k: v for k, v in rec.items() if k != "outcome"}
        summary = (
            f"entropy check at {r.seed_height} (attempt {r.attempt}): {agree} of {votes} votes "
            f"for our {short(r.entropy)}, {r.abstained} abstained, {no_answer} did not answer "
            f"within {self.p.timeout_s * 1000:g} ms"
        )
        if outcome in ("agree", "unverified"):
            was = self.halted
            self.halted = False
            self.recheck_at = None
            why = "proceeding" if outcome == "agree" else "nobody answered; proceeding unverified"
            if was:
                why = "recovered: producing again"
            self.host.entropy_event(
                "entropy_check", f"{summary} — {why}", "info", outcome=outcome, **fields
            )
            return
        self.halted = True
        if outcome == "mismatch":
            majority = [c for c, e in r.answers.items() if e == top]
            self.host.entropy_event(
                "entropy_check",
                f"{summary} — {top_n} of {votes} say {short(top)}: mismatch, producing stopped; "
                "re-syncing the seed block from the majority",
                "warning",
                outcome=outcome,
                majority_entropy=top.hex(),
                **fields,
            )
            self._resync(r.seed_height, top, self.rng.choice(majority))
        else:
            self.host.entropy_event(
                "entropy_check",
                f"{summary} — no 2/3 supermajority: producing stopped; re-checking in "
                f"{self.p.recheck_backoff_s:g} s",
                "warning",
                outcome=outcome,
                **fields,
            )
            self.recheck_at = (self.clock() + self.p.recheck_backoff_s, r.seed_height)

    # -- resolving a mismatch --------------------------------------------------------------

    def _resync(self, seed_height: int, majority: bytes, conn: Link) -> None:
        rid = next(self._ids)
        self.resync = (rid, conn, seed_height, majority)
        conn.send(GetBlocks(rid, seed_height, 1))
        self.recheck_at = (self.clock() + self.p.recheck_backoff_s * 2, seed_height)  # fallback

    def on_blocks(self, conn: Link, msg: Blocks) -> None:
        assert self.resync is not None
        _, peer, seed_height, majority = self.resync
        if conn is not peer:
            return
        self.resync = None
        block = decode_single_block(msg.blocks)
        ok = (
            block is not None
            and block.height == seed_height
            and entropy_of(block) == majority
            and self.host.authentic(block)
        )
        if not ok:
            self.host.entropy_event(
                "entropy_resync",
                f"majority peer did not serve a valid seed block {seed_height} with hash "
                f"{short(majority)}; re-checking in {self.p.recheck_backoff_s:g} s",
                "warning",
                seed_height=seed_height,
            )
            self.recheck_at = (self.clock() + self.p.recheck_backoff_s, seed_height)
            return
        stored = self.host.stored_hash(seed_height)
        if stored == majority:
            fresh = self.host.recompute_entropy(seed_height)
            self.host.entropy_event(
                "entropy_resync",
                f"seed block {seed_height} from the majority matches our chain; our entropy for "
                f"it was wrong — recomputed {short(fresh or b'')} from the block, re-checking",
                "warning",
                seed_height=seed_height,
                entropy=(fresh or b"").hex(),
            )
            self.recheck_at = (self.clock(), seed_height)
        else:
            self.host.entropy_event(
                "entropy_resync",
                f"our block {seed_height} is {short(stored or b'')}, the majority's is "
                f"{short(majority)}: our chain diverged; resolving the fork with that peer, "
                "then re-checking",
                "warning",
                seed_height=seed_height,
            )
            self.host.resolve_fork_with(conn)
            self.recheck_at = (self.clock() + self.p.recheck_backoff_s, seed_height)

    def view(self) -> dict[str, object]:
        return {
            "producing_halted": self.halted,
            "collecting": self.round is not None,
            "outcomes": {o: self.outcomes[o] for o in OUTCOMES},
            "votes": dict(self.votes),
            "timeouts": self.timeouts,
            "timeout_ms": self.p.timeout_s * 1000,
            "sample": self.p.sample,
            "history": list(self.history),
        }
