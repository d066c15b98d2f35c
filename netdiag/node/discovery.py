"""Discovery: the Kademlia routing table (kademlia.py) wired into the sans-IO core — what enters
and leaves the table, the peer lifecycle, the RPCs we answer, periodic maintenance and the views.
Lookups run in kadlookups.py, outbound peers are chosen from the table in kaddials.py.

RPCs (FindNode/Nodes, KadPing/KadPong) travel over an authenticated connection: an existing peer
connection or a short-lived probe (kadrpc.py).

What enters the table has been proven by a handshake at the address it will be dialled on:
  - an outbound connection we dialled (the dialled address is the peer's);
  - a probe whose handshake showed the node id the referrer promised;
  - an inbound peer only after a dial-back probe to the listen port it announced verified it
    (an inbound-only peer — listen port 0 — never enters the table).
Contacts named in a Nodes answer are candidates of a lookup, never table entries, until a probe
verified them. Banned peer ids and IPs, and peers scored below the gossip threshold, are neither
tabled, nor dialled, nor handed to others. Time comes from the injected clock; request timeouts
are scheduler callbacks.
"""

from __future__ import annotations

from collections.abc import Callable

from netdiag.node.config import NodeConfig, split_hostport
from netdiag.node.errors import ConfigError
from netdiag.node.gossip import GossipRouter
from netdiag.node.kaddials import TableDials
from netdiag.node.kademlia import (
    Contact,
    Limits,
    Lookup,
    RoutingTable,
    bucket_index,
    distance,
    kad_id,
    valid_host,
)
from netdiag.node.kadlookups import Lookups, LookupStats
from netdiag.node.kadrpc import DiscoveryMetrics, KadRpc, contact_at, probe_like, short
from netdiag.node.kadstore import KadStore
from netdiag.node.link import Link
from netdiag.node.logs import NodeLog
from netdiag.node.messages import FindNode, KadPing, KadPong, Message, NodeRecord, Nodes
from netdiag.node.metrics import NodeMetrics
from netdiag.node.peering import Peering
from netdiag.node.peers import PeerBook
from netdiag.node.protocol import encode_frame
from netdiag.node.runtime import Clock, Scheduler
from netdiag.node.scores import ScoreBook

DISCOVERY_MESSAGES = (FindNode, Nodes, KadPing, KadPong)
KAD_MAX_FRAME = 4096  # a full Nodes answer is < 2 KiB; anything bigger is not ours
PENALTY_UNSOLICITED = 5.0
MAX_VERIFY_QUEUE = 256
VERIFY_RETRY_S = 60.0


class Discovery:
    def __init__(
        self,
        cfg: NodeConfig,
        log: NodeLog,
        metrics: NodeMetrics,
        clock: Clock,
        scheduler: Scheduler,
        node_id: bytes,
        peering: Peering,
        book: PeerBook,
        gossip: GossipRouter,
        scores: ScoreBook | None = None,
        listen_port: Callable[[], int] = lambda: 0,
    ) -> None:
        self.cfg = cfg
        self.log = log
        self.m = DiscoveryMetrics(metrics)
        self.node_metrics = metrics
        self.clock = clock
        self.scheduler = scheduler
        self.node_id = node_id
        self.kid = kad_id(node_id)
        self.peering = peering
        self.book = book
        self.gossip = gossip
        self.scores = scores
        mono = clock.monotonic
        self.table = RoutingTable(
            node_id,
            Limits(
                k=cfg.kad_k,
                per_subnet_bucket=cfg.kad_subnet_bucket,
                per_subnet_table=cfg.kad_subnet_table,
            ),
            mono,
        )
        self.net = KadRpc(
            cfg, log, self.m, clock, scheduler, peering, book, self._verified, listen_port
        )
        self.lookups = Lookups(
            cfg, clock, self.m, self.table, self.net, self.usable, self._connected_contacts
        )
        self.dials = TableDials(cfg, clock, self.table, peering, book, self.usable)
        self.checking: set[bytes] = set()  # liveness checks in flight
        # inbound peers' listen addresses to check, with when they were queued
        self.verify_queue: dict[bytes, tuple[Contact, float]] = {}
        self.verified_at: dict[tuple[bytes, str], float] = {}
        self.dirty = False  # table changed since it was last persisted
        self.store: KadStore | None = None
        self.saved_at = clock.monotonic()

    # -- persistence -------------------------------------------------------------------------

    def attach_store(self, store: KadStore) -> int:
        """Persist the table in ``store`` and load what it holds; returns entries restored."""
        self.store = store
        n = store.load(self.table, self.clock.monotonic(), self.clock.wall_ms())
        self.m.table.set(len(self.table))
        if n:
            self.log.info(
                "kad_restored",
                f"routing table: {n} entries restored from the store (no bootstrap needed)",
                entries=n,
            )
        return n

    def save(self) -> None:
        if self.store is not None:
            self.store.save(self.table, self.clock.monotonic(), self.clock.wall_ms())
            self.dirty = False
            self.saved_at = self.clock.monotonic()

    def close(self) -> None:
        """Save and let go of the store (a second call does nothing)."""
        if self.store is not None:
            self.save()
            self.store.close()
            self.store = None

    def _verified(self, c: Contact) -> None:
        self.verified_at[(c.node_id, c.addr)] = self.clock.monotonic()
        self.offer(c, "probe handshake")

    # -- the routing table -------------------------------------------------------------------

    def usable(self, c: Contact) -> bool:
        """May this contact be tabled, dialled or handed to others?"""
        if self.book.peer_banned(c.node_id) or self.book.ip_banned(c.host):
            return False
        floor = self.gossip.p.gossip_threshold
        if self.scores is not None and (
            self.scores.peer_score(c.node_id) < floor
            or self.scores.ip_score(c.host) <= self.cfg.ban_threshold  # many peers of one IP
        ):
            return False
        return self.gossip.score(c.node_id) >= floor

    def offer(self, c: Contact, why: str) -> None:
        """A contact a handshake just proved at ``c.addr``."""
        if not self.usable(c) or not valid_host(c.host):
            return
        outcome, check = self.table.offer(c)
        self.m.table_events.labels(outcome).inc()
        if outcome == "added":
            self.dirty = True
            self.log.debug(
                "kad_added",
                f"routing table: added {short(c.node_id)} at {c.addr} "
                f"(bucket {self.table.bucket_of(c.node_id)}, {why})",
                peer=c.node_id.hex(),
                addr=c.addr,
                bucket=self.table.bucket_of(c.node_id),
                why=why,
            )
        elif outcome == "updated":
            self.dirty = True
        elif outcome == "full" and check is not None:
            self.check_alive(check)
        self.m.table.set(len(self.table))

    def check_alive(self, c: Contact) -> None:
        """Least-recently-seen rule: ping before evicting; a live entry stays."""
        if c.node_id in self.checking:
            return
        self.checking.add(c.node_id)

        def done(res: list[Contact] | None) -> None:
            self.checking.discard(c.node_id)
            if res is not None:
                self.table.seen(c.node_id)
                return
            promoted = self.table.failed(c.node_id)
            if c.node_id not in self.table:
                self.m.table_events.labels("evicted").inc()
                self.dirty = True
                self.log.debug(
                    "kad_evicted",
                    f"routing table: evicted {short(c.node_id)} (no answer to a liveness check)"
                    + (f"; {short(promoted.node_id)} takes its place" if promoted else ""),
                    peer=c.node_id.hex(),
                )
            self.m.table.set(len(self.table))

        self.net.rpc(c, KadPing(0), "ping", done)

    def drop(self, node_id: bytes, why: str) -> None:
        if node_id in self.table:
            self.table.remove(node_id)
            self.m.table_events.labels(why).inc()
            self.m.table.set(len(self.table))
            self.dirty = True

    # -- peer lifecycle (from the core) ------------------------------------------------------

    def peer_up(self, conn: Link) -> None:
        pid = conn.peer_id
        assert pid is not None
        if not self.cfg.discovery:
            return  # off: the table stays as stored, nothing is probed or dialled
        if conn.outbound and conn.dialed_addr:
            self.dials.dialled(conn.dialed_addr)
            c = contact_at(pid, conn.dialed_addr)
            if c is not None:
                stale = [
                    e.contact.node_id
                    for e in self.table.entries()
                    if e.contact.addr == c.addr and e.contact.node_id != pid
                ]
                for other in stale:  # that address now answers with another key
                    self.drop(other, "moved")
                self.offer(c, "outbound connection")
        elif pid not in self.table and conn.listen_addr:
            c = contact_at(pid, conn.listen_addr)
            if c is not None:
                self.queue_verify(c)
        else:
            self.table.seen(pid)

    def queue_verify(self, c: Contact) -> None:
        last = self.verified_at.get((c.node_id, c.addr), -1e18)
        if self.clock.monotonic() - last < VERIFY_RETRY_S or c.node_id in self.table:
            return
        if len(self.verify_queue) < MAX_VERIFY_QUEUE:
            self.verify_queue.setdefault(c.node_id, (c, self.clock.monotonic()))

    def learn_addrs(self, addrs: list[str]) -> None:
        """Peer-exchange addresses (no key known): verified by a probe before they are tabled."""
        now = self.clock.monotonic()
        for a in addrs[:16]:
            try:
                host, _ = split_hostport(a)
            except ConfigError:
                continue
            if now - self.verified_at.get((b"", a), -1e18) < VERIFY_RETRY_S:
                continue  # probed recently (tabled, refused by the limits, or unreachable)
            known = any(e.contact.addr == a for e in self.table.entries())
            room = len(self.net.probes_wanted) < MAX_VERIFY_QUEUE
            if valid_host(host) and not self.book.ip_banned(host) and not known and room:
                self.verified_at[(b"", a)] = now
                self.net.want_probe(a, None)

    # -- messages ----------------------------------------------------------------------------

    def on_message(self, conn: Link, msg: Message, size: int) -> str | None:
        """A discovery message from a peer or a probe. Returns a penalty reason, or None."""
        self.node_metrics.messages_received.labels(type(msg).__name__).inc()
        self.node_metrics.bytes_received.inc(size)
        framed = not probe_like(conn)  # a probe's bytes are counted whole at its close
        if framed:
            self.m.bytes.labels("received").inc(size)
        pid = conn.peer_id
        assert pid is not None
        if size > KAD_MAX_FRAME:
            return f"{type(msg).__name__} of {size} bytes"
        if pid in self.table:
            self.table.seen(pid)
        match msg:
            case FindNode(req_id=rid, target=target, listen_port=port):
                self._learn_asker(conn, port)
                only = self.cfg.debug_kad_only_subnet  # LAB ONLY: a Sybil's answer
                nodes = self.table.closest(
                    target,
                    self.cfg.kad_k,
                    keep=lambda c: (
                        c.node_id != pid and self.usable(c) and (not only or c.subnet == only)
                    ),
                )
                reply = Nodes(rid, [NodeRecord(c.node_id, c.host, c.port) for c in nodes])
                if framed:
                    self.m.bytes.labels("sent").inc(len(encode_frame(reply)))
                conn.send(reply)
            case KadPing(req_id=rid):
                pong = KadPong(rid)
                if framed:
                    self.m.bytes.labels("sent").inc(len(encode_frame(pong)))
                conn.send(pong)
            case Nodes() | KadPong():
                return self.net.on_reply(pid, msg, self.node_id)
        return None

    def closed(self, conn: Link) -> None:
        """A connection closed: a probe's whole wire cost (TCP payload: the TLS and node
        handshakes, requests, answers and the other end's chatter; and its segments) counts as
        discovery traffic, at both ends."""
        if not self.cfg.discovery or not probe_like(conn):
            return
        kind = "probe_out" if conn.outbound else "probe_in"
        out_b, in_b, out_s, in_s = conn.wire_bytes
        self.m.probe_bytes.labels("sent", kind).inc(out_b)
        self.m.probe_bytes.labels("received", kind).inc(in_b)
        self.m.probe_segments.labels("sent", kind).inc(out_s)
        self.m.probe_segments.labels("received", kind).inc(in_s)

    def _learn_asker(self, conn: Link, port: int) -> None:
        """Kademlia learns of a node from its requests: a node that joined after our last
        refresh asks us during its own lookups (over a probe, which announces no listen port
        in its handshake), so the listen port it names in FindNode is verified by a dial-back
        probe like an inbound peer's before it is tabled."""
        pid = conn.peer_id
        if not self.cfg.discovery or pid is None or pid in self.table or not port:
            return
        if conn.listen_addr is None and valid_host(conn.remote_host):
            self.queue_verify(Contact(pid, conn.remote_host, port))

    # -- outbound peers from the table (kaddials.py) and lookups (kadlookups.py) -----------

    @property
    def out_dialing(self) -> dict[str, bytes]:
        return self.dials.out_dialing

    def outbound_dials(self, budget: int, also: list[str] | None = None) -> list[str]:
        return self.dials.outbound_dials(budget, also)

    def admit_outbound(self, conn: Link) -> str | None:
        return self.dials.admit_outbound(conn)

    def dial_failed(self, addr: str) -> None:
        """An outbound dial of ours failed (connect, handshake or refusal)."""
        if self.dials.failed(addr):
            self.m.table_events.labels("evicted").inc()
            self.dirty = True
        self.m.table.set(len(self.table))

    @property
    def stats(self) -> LookupStats:
        return self.lookups.stats

    def lookup(
        self, target: bytes, purpose: str, on_done: Callable[[Lookup], None] | None = None
    ) -> Lookup:
        return self.lookups.start(target, purpose, on_done)

    def _connected_contacts(self) -> list[Contact]:
        return [
            c
            for pid, conn in self.peering.conns.items()
            if conn.listen_addr and (c := contact_at(pid, conn.listen_addr))
        ]

    def step(self) -> None:
        """Periodic: bans, the join and refresh lookups, dial-back checks."""
        if not self.cfg.discovery:
            return
        now = self.clock.monotonic()
        for e in self.table.entries():
            if not self.usable(e.contact):
                self.drop(e.contact.node_id, "banned")
        settle = self.cfg.handshake_timeout_s + 1.0  # a settled connection is not replaced
        due = [(n, c) for n, (c, t) in self.verify_queue.items() if now - t >= settle]
        for node_id, c in due[: self.cfg.kad_max_probes]:
            del self.verify_queue[node_id]
            if node_id in self.table or not self.usable(c):
                continue
            self.verified_at[(node_id, c.addr)] = now
            self.net.want_probe(c.addr, node_id)
        for key in [k for k, t in self.verified_at.items() if now - t > VERIFY_RETRY_S]:
            del self.verified_at[key]
        if self.dirty and now - self.saved_at >= self.cfg.kad_persist_s:
            self.save()
        if self.table or self.peering.conns:
            self.lookups.maintain()

    def summary(self) -> dict[str, object]:
        st = self.stats
        return {
            "enabled": self.cfg.discovery,
            "table_entries": len(self.table),
            "lookups_completed": st.completed,
            "lookups_running": len(self.lookups.running),
            "last_lookup_hops": st.last_hops,
            "last_lookup_s": round(st.last_seconds, 6),
            "probes_open": len(self.net.probe_links),
        }

    def entry_view(self, node_id: bytes) -> dict[str, object]:
        """Table fields for one /peers row (None: the peer is not in the table)."""
        e = self.table.get(node_id)
        if e is None:
            return {"bucket": None, "distance": None, "last_seen_s": None}
        return {
            "bucket": bucket_index(self.kid, e.contact.kid),
            "distance": f"{distance(self.kid, e.contact.kid):064x}",
            "last_seen_s": round(self.clock.monotonic() - e.last_seen, 3),
        }

    def table_view(self) -> list[dict[str, object]]:
        now = self.clock.monotonic()
        conns = self.peering.conns
        return [
            {
                "peer_id": e.contact.node_id.hex(),
                "address": e.contact.addr,
                "bucket": bucket_index(self.kid, e.contact.kid),
                "distance": f"{distance(self.kid, e.contact.kid):064x}",
                "last_seen_s": round(now - e.last_seen, 3),
                "added_s": round(now - e.added, 3),
                "failures": e.failures,
                "connected": (
                    conns[e.contact.node_id].direction if e.contact.node_id in conns else None
                ),
            }
            for e in self.table.entries()
        ]
