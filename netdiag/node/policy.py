"""Ban policy: application penalties feed the gossip score (mesh ranking, this connection) and
the persistent ``ScoreBook`` (per peer id and per IP, across reconnects, decaying). Either score
at ``ban_threshold``, more than ``max_violations`` protocol violations on record, or a provable
offence bans the peer id for ``ban_seconds``; an IP whose peers' penalties reach
``ip_ban_factor`` times the threshold is banned as an address."""

from __future__ import annotations

from netdiag.node.config import NodeConfig
from netdiag.node.gossip import GossipRouter
from netdiag.node.link import Link
from netdiag.node.logs import NodeLog
from netdiag.node.metrics import NodeMetrics
from netdiag.node.peering import Peering
from netdiag.node.protocol import Violation
from netdiag.node.scores import ScoreBook

PENALTY_VIOLATION = 50.0
PENALTY_INVALID = 20.0
PENALTY_RATE = 1.0
# a peer cut for not reading its output: mild (an honest peer whose process stalled recovers
# as it decays), but one that asks and never reads, session after session, ends up banned
PENALTY_NOT_READING = 10.0
NOT_READING = ("write_buffer", "write_stall")
# a peer cut for reading under MIN_PEER_RATE while still reading (stallwatch.py): not
# scored — a node with a slow uplink serving many peers would otherwise penalise all of them
SLOW_READING = ("write_slow",)


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
        scores: ScoreBook,
    ) -> None:
        self.scores = scores
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
            self.penalize(conn, PENALTY_VIOLATION, f"protocol violation {v.reason}", violation=True)

    def on_limit(self, conn: Link, limit: str) -> None:
        self.metrics.limit_hits.labels(limit).inc()
        # Dropping messages costs score (a flood ends in a ban); byte throttling does not — a
        # fast honest peer is merely slowed down by TCP backpressure.
        if conn.peer_id is not None and limit == "peer_msg_rate":
            self.penalize(conn, PENALTY_RATE, f"over {limit}")
        if limit in NOT_READING or limit in SLOW_READING:
            # a peer that does not read costs score; one reading below the floor is only cut
            # (a slow link, or our own slow uplink shared by many peers, is not misbehaviour)
            scored = limit in NOT_READING
            who = short(conn.peer_id) if conn.peer_id else conn.address
            log = self.log.warning if scored else self.log.info
            log(
                "peer_not_reading" if scored else "peer_slow_reader",
                f"peer {who} cut ({limit}){'' if scored else ', not scored'}: {conn.close_reason}",
                addr=conn.address,
                limit=limit,
                peer=conn.peer_id.hex() if conn.peer_id else None,
            )
            if scored:
                self.penalize(conn, PENALTY_NOT_READING, f"does not read ({limit})")

    def penalize(self, conn: Link, amount: float, reason: str, violation: bool = False) -> None:
        pid = conn.peer_id
        if pid is None:
            return
        self.gossip.penalize(pid, amount)
        kept = self.scores.penalize(pid, conn.remote_host, amount, violation)
        score = min(self.gossip.score(pid), kept)
        violations = self.scores.peers.violations(pid)
        self._maybe_ban_ip(conn, reason)
        if self.peering.book.peer_banned(pid):
            return
        if violations > self.cfg.max_violations:
            why = (
                f"{violations} protocol violations on record (max_violations "
                f"{self.cfg.max_violations}), last for {reason}"
            )
        elif score <= self.cfg.ban_threshold:
            why = f"score {score:.1f} fell below {self.cfg.ban_threshold:g}, last for {reason}"
        else:
            return
        self.peering.book.ban_peer(pid, why)
        self.metrics.bans.labels("peer").inc()
        self.log.warning(
            "peer_banned",
            f"banned peer {short(pid)} for {self.cfg.ban_seconds:g} s: {why}",
            peer=pid.hex(),
            score=score,
            violations=violations,
            reason=reason,
        )
        conn.close(f"banned: {why}", flush=False)  # it gets our reason, not our output

    def _maybe_ban_ip(self, conn: Link, reason: str) -> None:
        ip = conn.remote_host
        ip_score = self.scores.ip_score(ip)
        if ip_score > self.cfg.ban_threshold * self.cfg.ip_ban_factor:
            return
        if self.peering.book.ip_banned(ip):
            return
        self.peering.book.ban_ip(ip)
        self.metrics.bans.labels("ip").inc()
        self.log.warning(
            "ip_banned",
            f"banned {ip} for {self.cfg.ban_seconds:g} s: the peers it hosts reached a score of "
            f"{ip_score:.1f} ({self.cfg.ip_ban_factor:g}x the ban threshold), last for {reason}",
            ip=ip,
            score=ip_score,
        )

    def ban(self, conn: Link, reason: str) -> None:
        """Ban at once (a provable offence such as a forged sync segment), whatever the score."""
        pid = conn.peer_id
        if pid is None:
            return
        self.peering.book.ban_peer(pid, reason)
        self.metrics.bans.labels("peer").inc()
        self.log.warning(
            "peer_banned",
            f"banned peer {short(pid)} for {self.cfg.ban_seconds:g} s: {reason}",
            peer=pid.hex(),
            reason=reason,
        )
        conn.close(f"banned: {reason}", flush=False)
