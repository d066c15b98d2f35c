"""Ban policy: application penalties feed the gossip score; a score at the threshold, or a
provable offence, bans the peer id for ``ban_seconds``."""

from __future__ import annotations

from netdiag.node.config import NodeConfig
from netdiag.node.gossip import GossipRouter
from netdiag.node.link import Link
from netdiag.node.logs import NodeLog
from netdiag.node.metrics import NodeMetrics
from netdiag.node.peering import Peering
from netdiag.node.protocol import Violation

PENALTY_VIOLATION = 50.0
PENALTY_INVALID = 20.0
PENALTY_RATE = 1.0


def short(b: bytes) -> str:
    return b[:6].hex()


class BanPolicy:
    def __init__(
        self,
        cfg: NodeConfig,
        log: NodeLog,
        metrics: NodeMetrics,
        gossip: GossipRouter,
        peering: Peering,
    ) -> None:
        self.cfg = cfg
        self.log = log
        self.metrics = metrics
        self.gossip = gossip
        self.peering = peering

    def on_violation(self, conn: Link, v: Violation) -> None:
        self.metrics.protocol_violations.labels(v.reason).inc()
        who = short(conn.peer_id) if conn.peer_id else conn.address
        self.log.warning(
            "protocol_violation",
            f"peer {who} violated the protocol ({v.reason}): {v.detail[:200]}; disconnecting",
            addr=conn.address,
            reason=v.reason,
            peer=conn.peer_id.hex() if conn.peer_id else None,
        )
        if conn.peer_id is not None:
            self.penalize(conn, PENALTY_VIOLATION, f"protocol violation {v.reason}")

    def on_limit(self, conn: Link, limit: str) -> None:
        self.metrics.limit_hits.labels(limit).inc()
        # Dropping messages costs score (a flood ends in a ban); byte throttling does not — a
        # fast honest peer is merely slowed down by TCP backpressure.
        if conn.peer_id is not None and limit == "peer_msg_rate":
            self.penalize(conn, PENALTY_RATE, f"over {limit}")

    def penalize(self, conn: Link, amount: float, reason: str) -> None:
        pid = conn.peer_id
        if pid is None:
            return
        self.gossip.penalize(pid, amount)
        score = self.gossip.score(pid)
        if score <= self.cfg.ban_threshold and self.peering.conns.get(pid) is conn:
            self.peering.book.ban_peer(pid)
            self.metrics.bans.labels("peer").inc()
            self.log.warning(
                "peer_banned",
                f"banned peer {short(pid)} for "
                f"{self.cfg.ban_seconds:g} s: score {score:.1f} fell below "
                f"{self.cfg.ban_threshold:g}, last for {reason}",
                peer=pid.hex(),
                score=score,
                reason=reason,
            )
            conn.close(f"banned: score {score:.1f} ({reason})")

    def ban(self, conn: Link, reason: str) -> None:
        """Ban at once (a provable offence such as a forged sync segment), whatever the score."""
        pid = conn.peer_id
        if pid is None:
            return
        self.peering.book.ban_peer(pid)
        self.metrics.bans.labels("peer").inc()
        self.log.warning(
            "peer_banned",
            f"banned peer {short(pid)} for {self.cfg.ban_seconds:g} s: {reason}",
            peer=pid.hex(),
            reason=reason,
        )
        conn.close(f"banned: {reason}")
