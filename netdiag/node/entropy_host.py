"""The node's side of the entropy consensus check (entropy_check.EntropyHost).

Our entropy per epoch (bounded memory, the divergence test hook), the peers to sample, and the
check's events turned into metrics and log lines. The core builds one and hands it to the check.
"""

from __future__ import annotations

from collections.abc import Callable

from netdiag.node.chain import Chain
from netdiag.node.config import NodeConfig
from netdiag.node.genesis import GenesisSpec
from netdiag.node.link import Link
from netdiag.node.logs import NodeLog
from netdiag.node.metrics import NodeMetrics
from netdiag.node.model import Block
from netdiag.node.window_sync import ParallelSync

ENTROPY_MEMORY = 16  # seed heights whose entropy hash we keep


class NodeEntropyHost:
    def __init__(
        self,
        cfg: NodeConfig,
        log: NodeLog,
        metrics: NodeMetrics,
        genesis: GenesisSpec,
        chain: Chain,
        conns: Callable[[], dict[bytes, Link]],
        sync: ParallelSync,
        halted: Callable[[], bool],  # the check's own state, read when an event is reported
    ) -> None:
        self.cfg = cfg
        self.log = log
        self.metrics = metrics
        self.genesis = genesis
        self._chain = chain
        self._conns = conns
        self.sync = sync
        self._halted = halted
        self._entropy: dict[int, bytes] = {}  # seed height -> our entropy hash (bounded)
        self._entropy_fault_used = False

    def entropy_peers(self) -> list[Link]:
        return [c for c in self._conns().values() if c.is_open]

    def local_entropy(self, seed_height: int) -> bytes | None:
        """Our entropy for the epoch seeded at ``seed_height``: that block's mix (entropy.py),
        or its hash on a network without entropy anchors (model.entropy_of)."""
        got = self._entropy.get(seed_height)
        if got is not None:
            return got
        if seed_height > self._chain.height:
            return None
        h = self._chain.seed_at(seed_height)
        if h is None:
            return None
        L = self.genesis.params.epoch_length
        hook = self.cfg.debug_divergent_entropy_epoch
        if hook >= 0 and seed_height == hook * L and not self._entropy_fault_used:
            self._entropy_fault_used = True  # TEST HOOK: diverge once, as a corrupted view would
            h = bytes(x ^ 0xFF for x in h)
            self.log.warning(
                "entropy_divergent",
                f"test hook: our entropy for the epoch seeded at {seed_height} is made divergent",
                seed_height=seed_height,
            )
        self._entropy[seed_height] = h
        for k in sorted(self._entropy)[:-ENTROPY_MEMORY]:
            del self._entropy[k]
        return h

    def recompute_entropy(self, seed_height: int) -> bytes | None:
        self._entropy.pop(seed_height, None)
        return self.local_entropy(seed_height)

    def stored_hash(self, seed_height: int) -> bytes | None:
        """The seed our stored block gives (what peers' entropy answers are compared with)."""
        return self._chain.seed_at(seed_height)

    def authentic(self, block: Block) -> bool:
        return self.sync.authentic(block)

    def resolve_fork_with(self, conn: Link) -> None:
        self.sync.resolve_fork_with(conn)

    def entropy_event(self, event: str, msg: str, level: str, **fields: object) -> None:
        if event == "entropy_check":

            def n(key: str) -> int:
                v = fields.get(key, 0)
                return v if isinstance(v, int) else 0

            self.metrics.entropy_checks.labels(str(fields.get("outcome"))).inc()
            for vote in ("disagree", "abstain", "no_answer"):
                self.metrics.entropy_votes.labels(vote).inc(n(vote))
            self.metrics.entropy_votes.labels("agree").inc(max(0, n("agree") - 1))  # not ours
        self.metrics.entropy_producing_halted.set(int(self._halted()))
        if level == "info":
            self.log.info(event, msg, **fields)
        else:
            self.log.warning(event, msg, **fields)
