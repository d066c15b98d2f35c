"""Peering and admission: who is connected, who may connect, whom to dial.

Holds the table of authenticated links (by peer id) and of links still handshaking, decides
inbound admission (bans, inbound and per-IP limits) and authenticated admission (bans,
duplicates, outbound limit), and records failed handshakes toward the IP ban. No I/O: the
shell hands it links and dials what ``to_dial`` returns.
"""

from __future__ import annotations

from collections.abc import Callable

from netdiag.node.config import NodeConfig
from netdiag.node.gossip import GossipRouter, Send
from netdiag.node.link import Link
from netdiag.node.logs import NodeLog
from netdiag.node.messages import Prune
from netdiag.node.metrics import NodeMetrics
from netdiag.node.peers import PeerBook
from netdiag.node.resources import ConnRateLimiter, Limits


def short(b: bytes) -> str:
    return b[:6].hex()


class Peering:
    def __init__(
        self,
        cfg: NodeConfig,
        log: NodeLog,
        metrics: NodeMetrics,
        node_id: bytes,
        book: PeerBook,
        gossip: GossipRouter,
        limits: Limits,
        conn_rate: ConnRateLimiter,
        clock: Callable[[], float],
    ) -> None:
        self.clock = clock
        self.limits = limits
        self.conn_rate = conn_rate
        self.cfg = cfg
        self.log = log
        self.metrics = metrics
        self.node_id = node_id
        self.book = book
        self.gossip = gossip
        self.conns: dict[bytes, Link] = {}  # authenticated, by peer id
        self.pending: set[Link] = set()  # handshaking
        self.on_up: Callable[[Link], None] = lambda conn: None  # a peer was admitted
        self.on_down: Callable[[Link], None] = lambda conn: None  # an admitted peer left

    # -- admission -------------------------------------------------------------------------

    def admit_inbound(self, conn: Link) -> bool:
        """A new inbound socket: count it as handshaking, or refuse it (the caller closes)."""
        if self.refuse_inbound(conn.remote_host, conn.address):
            return False
        self.handshaking(conn)
        return True

    def refuse_inbound(self, ip: str, address: str) -> bool:
        """Right after accept(): True (logged, counted) if the socket must be closed now."""
        refusal = self.inbound_refusal(ip)
        if refusal is None:
            return False
        self.metrics.limit_hits.labels(refusal[0]).inc()
        self.log.info(
            "inbound_refused",
            f"refused inbound {address}: {refusal[1]}",
            addr=address,
            reason=refusal[0],
        )
        return True

    def handshaking(self, conn: Link) -> None:
        self.pending.add(conn)
        self.update_peer_gauges()

    def inbound_refusal(self, ip: str) -> tuple[str, str] | None:
        """Checked right after accept(), before any TLS or node handshake byte is read: the
        socket then counts against every limit until it closes."""
        lim = self.limits
        if self.book.ip_banned(ip):
            return "banned_ip", f"{ip} is banned (failed handshakes or its peers' scores)"
        if not self.conn_rate.allow(ip):
            return "conn_rate_per_ip", (
                f"{ip} opens connections faster than {lim.conn_rate_per_ip:g}/s "
                f"(burst {lim.conn_burst_per_ip})"
            )
        inbound = [c for c in [*self.conns.values(), *self.pending] if not c.outbound]
        if sum(c.remote_host == ip for c in inbound) >= lim.max_inbound_per_ip:
            return "max_inbound_per_ip", f"per-IP inbound limit {lim.max_inbound_per_ip}"
        if len(inbound) >= lim.max_inbound and not self._evict_handshake(ip, "inbound limit"):
            return "max_inbound", f"inbound limit {lim.max_inbound} reached"
        handshaking = sum(not c.outbound for c in self.pending)
        if handshaking >= lim.max_pending_handshakes and not self._evict_handshake(
            ip, "handshake limit"
        ):
            return "max_pending_handshakes", (
                f"{handshaking} inbound handshakes in progress (limit {lim.max_pending_handshakes})"
            )
        return None

    def _evict_handshake(self, newcomer_ip: str, full: str) -> bool:
        """Make room for a newcomer by closing the oldest inbound handshake of the address that
        holds the most — if it has run for a tenth of the handshake timeout: an honest
        handshake takes a few round trips, so the slots a stalling attacker holds are the old
        ones, and half-open handshakes cannot starve newcomers. A failed handshake for the IP."""
        floor = self.clock() - self.cfg.handshake_timeout_s / 10
        stale = [
            c
            for c in self.pending
            if not c.outbound and c.remote_host != newcomer_ip and c.connected_at <= floor
        ]
        if not stale:
            return False
        per_ip: dict[str, int] = {}
        for c in stale:
            per_ip[c.remote_host] = per_ip.get(c.remote_host, 0) + 1
        victim = min(stale, key=lambda c: (-per_ip[c.remote_host], c.connected_at))
        self.pending.discard(victim)
        self.metrics.limit_hits.labels("handshake_evicted").inc()
        self.log.debug(
            "handshake_evicted",
            f"closed the handshake of {victim.address} ({full} reached; it is the oldest of "
            f"its address's {per_ip[victim.remote_host]}) to admit {newcomer_ip}",
            addr=victim.address,
        )
        victim.close(f"evicted: {full} reached and this handshake is the oldest")
        return True

    def on_open(self, conn: Link) -> str | None:
        refusal = self._open(conn)
        if refusal:
            assert conn.peer_id is not None
            self.log.info(
                "peer_refused",
                f"refused authenticated peer {short(conn.peer_id)} "
                f"({conn.direction}, {conn.address}): {refusal}",
                peer=conn.peer_id.hex(),
                addr=conn.address,
                reason=refusal,
            )
        return refusal

    def _open(self, conn: Link) -> str | None:
        pid = conn.peer_id
        assert pid is not None
        self.pending.discard(conn)
        if self.book.peer_banned(pid):
            self.metrics.handshakes.labels("refused_banned").inc()
            return self.book.ban_refusal(pid)
        old = self.conns.get(pid)
        if old is not None:
            if not self.replaces(conn):
                self.metrics.handshakes.labels("refused_duplicate").inc()
                return f"refused: already connected to {short(pid)}"
            old.close("replaced by a simultaneous connection")
            self.drop_peer(old)
        if conn.outbound and self.outbound_count() >= self.limits.max_outbound:
            self.metrics.limit_hits.labels("max_outbound").inc()
            return "refused: outbound limit reached"
        self.conns[pid] = conn
        if conn.dialed_addr:
            self.book.connected(conn.dialed_addr)
        self.metrics.handshakes.labels("ok").inc()
        self.update_peer_gauges()
        self.log.info(
            "peer_connected",
            f"peer {short(pid)} connected ({conn.direction}, "
            f"{conn.address}, tls={conn.tls}, cookie={conn.cookie})",
            peer=pid.hex(),
            addr=conn.address,
            direction=conn.direction,
            socket_cookie=conn.cookie,
            tls=conn.tls,
        )
        self.send_all(self.gossip.add_peer(pid, conn.outbound))
        self.on_up(conn)
        return None

    def replaces(self, conn: Link) -> bool:
        """The simultaneous-dial rule, applied alike at both ends: a second authenticated
        connection to a connected peer replaces the first if it was dialed by the smaller node
        id, the first by the other end, and the first is young (an established one is never
        replaced; a later duplicate is refused). An inbound connection that announced no listen
        port — a discovery probe, or a node we could not have dialed — is never one side of a
        simultaneous dial: it never replaces our connection, and our own dial replaces it
        (the prober keeps a probe as a probe, not as its peer connection: keeping the probe
        here would leave the pair with no peer connection)."""
        pid = conn.peer_id
        old = self.conns.get(pid) if pid is not None else None
        if pid is None or old is None or old is conn or old.outbound == conn.outbound:
            return False
        if not conn.outbound and conn.listen_addr is None:
            return False
        if conn.outbound and old.listen_addr is None:
            return True
        keep_new = (conn.outbound and self.node_id < pid) or (
            not conn.outbound and pid < self.node_id
        )
        settled = self.book.clock() - old.connected_at > self.cfg.handshake_timeout_s
        return keep_new and not settled

    def on_closed(self, conn: Link, reason: str) -> None:
        self.pending.discard(conn)
        self.update_peer_gauges()
        if conn.peer_id is None:
            self.note_failed_handshake(conn, reason)
            return
        if self.conns.get(conn.peer_id) is conn:
            self.drop_peer(conn)
            self.log.info(
                "peer_disconnected",
                f"peer {short(conn.peer_id)} disconnected: {reason}",
                peer=conn.peer_id.hex(),
                addr=conn.address,
                reason=reason,
            )
        if conn.dialed_addr:
            self.book.disconnected(conn.dialed_addr)

    def drop_peer(self, conn: Link) -> None:
        assert conn.peer_id is not None
        if self.conns.get(conn.peer_id) is conn:
            del self.conns[conn.peer_id]
        self.gossip.remove_peer(conn.peer_id)
        self.on_down(conn)
        self.update_peer_gauges()

    def note_failed_handshake(self, conn: Link, reason: str) -> None:
        self.metrics.handshakes.labels("failed").inc()
        if conn.outbound or "handshake_self" in reason:
            return  # our own dial to ourselves is not the remote address misbehaving
        self.log.info(
            "handshake_failed",
            f"inbound {conn.address} failed the handshake: {reason}",
            addr=conn.address,
            reason=reason,
        )
        if self.book.handshake_failed(conn.remote_host):
            self.metrics.bans.labels("ip").inc()
            self.log.warning(
                "ip_banned",
                f"banned {conn.remote_host} for "
                f"{self.cfg.ban_seconds:g} s: more than "
                f"{self.cfg.max_failed_handshakes_per_ip} failed handshakes a minute",
                ip=conn.remote_host,
            )

    def outbound_count(self) -> int:
        return sum(c.outbound for c in self.conns.values())

    def update_peer_gauges(self) -> None:
        out = self.outbound_count()
        self.metrics.peers.labels("outbound").set(out)
        self.metrics.peers.labels("inbound").set(len(self.conns) - out)
        usage = self.metrics.resource_usage
        usage.labels("conns_inbound").set(
            sum(not c.outbound for c in [*self.conns.values(), *self.pending])
        )
        usage.labels("conns_outbound").set(
            sum(c.outbound for c in [*self.conns.values(), *self.pending])
        )
        usage.labels("handshakes_inbound").set(sum(not c.outbound for c in self.pending))

    # -- dialing ---------------------------------------------------------------------------

    def to_dial(self, listen_port: int) -> list[str]:
        connected = {c.dialed_addr for c in self.conns.values()} | {
            c.listen_addr for c in self.conns.values()
        }
        own = {f"127.0.0.1:{listen_port}", self.cfg.listen}
        return self.book.to_dial(
            connected, own, self.outbound_count(), bootstrap_only=self.cfg.discovery
        )

    def dial_failed(self, addr: str, why: str) -> None:
        backoff = self.book.dial_failed(addr)
        self.log.debug(
            "dial_failed",
            f"dial {addr} failed ({why}); retry in {backoff:.1f} s",
            addr=addr,
            reason=why,
            failures=self.book.addrs[addr].failures,
        )

    def dial_ended(self, addr: str, peer_id: bytes | None, why: str) -> None:
        """An outbound connection we dialed closed (after a handshake or not)."""
        if "handshake_self" in why:
            self.book.mark_self(addr)  # that address is us: never dial it again
        elif peer_id is None or "refus" in why:
            self.dial_failed(addr, why)

    # -- sending ---------------------------------------------------------------------------

    def shareable_addrs(self, exclude: Link) -> list[str]:
        addrs = [c.listen_addr for c in self.conns.values() if c is not exclude and c.listen_addr]
        return sorted(set(addrs))[:64]

    def send_all(self, sends: list[Send]) -> None:
        for pid, msg in sends:
            conn = self.conns.get(pid)
            if conn is None:
                continue
            if isinstance(msg, Prune) and not msg.peers:
                # v1.1 peer exchange on prune: a pruned peer learns where else to connect
                msg = Prune(msg.topic, msg.backoff_s, self.shareable_addrs(exclude=conn)[:16])
            conn.send(msg)
