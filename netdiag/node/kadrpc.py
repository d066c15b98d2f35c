"""Discovery RPCs: requests with timeouts, over a peer connection or a short-lived probe.

A request goes over the authenticated connection we already have to that key; otherwise it
waits on a *probe* — an outbound connection the shell dials (``probe_dials``), which runs the
normal handshake, so it proves the key at that address before a byte of the request is sent.
A probe whose handshake shows another key than the one the referrer promised fails its
requests. A probe carries its requests and is closed when they are answered or timed out; it
takes no outbound slot and never joins the gossip mesh. Timeouts are scheduler callbacks on the
injected clock.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import Counter, Gauge, Histogram

from netdiag.node.config import NodeConfig, split_hostport
from netdiag.node.errors import ConfigError
from netdiag.node.kademlia import Contact, valid_host
from netdiag.node.link import Link
from netdiag.node.logs import NodeLog
from netdiag.node.messages import (
    VERSION_FINDNODE_LISTEN_PORT,
    FindNode,
    KadPing,
    KadPong,
    Message,
    Nodes,
)
from netdiag.node.metrics import NodeMetrics
from netdiag.node.peering import Peering
from netdiag.node.peers import PeerBook
from netdiag.node.protocol import encode_frame
from netdiag.node.runtime import Clock, Scheduler

HOP_BUCKETS = (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 16)
LOOKUP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def short(b: bytes) -> str:
    return b[:6].hex()


def probe_like(conn: Link) -> bool:
    """A discovery probe: one we dialled as such, or an inbound connection that announced no
    listen port (a probe's handshake announces none; every node of a discovery network
    listens). Its bytes are counted on the wire, whole, when it closes (``probe_bytes``)."""
    return conn.probe or (not conn.outbound and conn.listen_addr is None)


def contact_at(pid: bytes, addr: str) -> Contact | None:
    """The contact for a key proven at ``addr`` (an IP literal and a real port), or None."""
    try:
        host, port = split_hostport(addr)
    except ConfigError:
        return None
    if not valid_host(host) or port == 0:
        return None
    return Contact(pid, host, port)


class DiscoveryMetrics:
    """Discovery collectors, registered in the node's own registry."""

    def __init__(self, metrics: NodeMetrics) -> None:
        r, ns = metrics.registry, "netdiag_node"
        self.table = Gauge("kad_table_entries", "Routing table entries", namespace=ns, registry=r)
        self.lookups = Counter(
            "kad_lookups", "Iterative lookups, by purpose", ["purpose"], namespace=ns, registry=r
        )
        self.lookup_seconds = Histogram(
            "kad_lookup_seconds",
            "Iterative lookup latency",
            buckets=LOOKUP_BUCKETS,
            namespace=ns,
            registry=r,
        )
        self.lookup_hops = Histogram(
            "kad_lookup_hops",
            "Sequential query steps that reached the nearest node found",
            buckets=HOP_BUCKETS,
            namespace=ns,
            registry=r,
        )
        self.refreshes = Counter(
            "kad_bucket_refreshes", "Bucket refresh lookups started", namespace=ns, registry=r
        )
        self.rpcs = Counter(
            "kad_rpcs", "Requests we sent, by rpc and outcome", ["rpc", "outcome"],
            namespace=ns, registry=r,
        )  # fmt: skip
        self.probes = Counter(
            "kad_probes", "Probe connections, by outcome", ["outcome"], namespace=ns, registry=r
        )
        self.table_events = Counter(
            "kad_table_events",
            "Table offers and removals, by outcome (added, updated, full, subnet_bucket, "
            "subnet_table, evicted, banned)",
            ["event"],
            namespace=ns,
            registry=r,
        )
        self.bytes = Counter(
            "kad_bytes",
            "Discovery frame bytes on peer connections, by direction (probes: kad_probe_bytes)",
            ["direction"],
            namespace=ns,
            registry=r,
        )
        self.probe_bytes = Counter(
            "kad_probe_bytes",
            "TCP payload bytes of probe connections (TCP, TLS and node handshakes, requests, "
            "answers, whatever else the other end sent), counted at their close; conn: "
            "probe_out (we dialled it) or probe_in (inbound, no listen port announced)",
            ["direction", "conn"],
            namespace=ns,
            registry=r,
        )
        self.probe_segments = Counter(
            "kad_probe_segments",
            "TCP segments of probe connections (tcp_info segs_out/segs_in at close: the TCP/IP "
            "headers' share of their cost)",
            ["direction", "conn"],
            namespace=ns,
            registry=r,
        )


@dataclass
class _Req:
    req_id: int
    rpc: str  # find | ping
    contact: Contact
    msg: Message
    sent_at: float
    on_done: Callable[[list[Contact] | None], None]  # None: failed or timed out
    link: Link | None = None


@dataclass
class _Probe:
    addr: str
    expected: bytes | None  # the key a referrer promised; None when only the address is known
    reqs: list[int] = field(default_factory=list)
    link: Link | None = None
    verify: bool = False  # a dial-back check of an inbound peer's listen address


class KadRpc:
    def __init__(
        self,
        cfg: NodeConfig,
        log: NodeLog,
        m: DiscoveryMetrics,
        clock: Clock,
        scheduler: Scheduler,
        peering: Peering,
        book: PeerBook,
        on_verified: Callable[[Contact], None],
        listen_port: Callable[[], int] = lambda: 0,
    ) -> None:
        self.cfg = cfg
        self.log = log
        self.m = m
        self.clock = clock
        self.scheduler = scheduler
        self.peering = peering
        self.book = book
        self.on_verified = on_verified  # a probe's handshake proved this contact
        self.listen_port = listen_port  # ours, announced in FindNode
        self._req_seq = int.from_bytes(os.urandom(4), "big") << 20
        self.reqs: dict[int, _Req] = {}
        self.probes_wanted: dict[str, _Probe] = {}  # not dialled yet, in request order
        self.probes_dialing: dict[str, _Probe] = {}
        self.probe_links: dict[Link, _Probe] = {}

    def want_probe(self, addr: str, expected: bytes | None) -> None:
        """Dial ``addr`` only to prove who is there (a dial-back or peer-exchange check)."""
        if addr not in self.probes_wanted and addr not in self.probes_dialing:
            self.probes_wanted[addr] = _Probe(addr, expected, verify=True)

    def _next_req(self) -> int:
        self._req_seq = (self._req_seq + 1) % (1 << 63)
        return self._req_seq

    def rpc(
        self,
        c: Contact,
        msg: FindNode | KadPing,
        rpc: str,
        on_done: Callable[[list[Contact] | None], None],
    ) -> None:
        rid = self._next_req()
        if isinstance(msg, FindNode):
            msg = FindNode(rid, msg.target, self.listen_port())
        else:
            msg = KadPing(rid)
        req = _Req(rid, rpc, c, msg, self.clock.monotonic(), on_done)
        self.reqs[rid] = req
        self.scheduler.call_later(self.cfg.kad_request_timeout_s, lambda: self._timeout(rid))
        link = self._link_to(c.node_id)
        if link is not None:
            self._send(link, req)
            return
        probe = self.probes_dialing.get(c.addr) or self.probes_wanted.get(c.addr)
        if probe is None:
            probe = self.probes_wanted[c.addr] = _Probe(c.addr, c.node_id)
        elif probe.expected is None:
            probe.expected = c.node_id
        elif probe.expected != c.node_id:
            self._finish(rid, None, "conflict")  # two keys claimed for one address
            return
        probe.reqs.append(rid)

    def _link_to(self, node_id: bytes) -> Link | None:
        conn = self.peering.conns.get(node_id)
        if conn is not None and conn.is_open:
            return conn
        for link in self.probe_links:
            if link.peer_id == node_id and link.is_open:
                return link
        return None

    def _send(self, link: Link, req: _Req) -> None:
        req.link = link
        msg = req.msg
        if isinstance(msg, FindNode) and link.version < VERSION_FINDNODE_LISTEN_PORT:
            msg = FindNode(msg.req_id, msg.target)  # the version-1 message: no listen port
        if not probe_like(link):  # a probe's bytes are counted whole, on the wire, at its close
            self.m.bytes.labels("sent").inc(len(encode_frame(msg)))
        link.send(msg)

    def _timeout(self, rid: int) -> None:
        if rid in self.reqs:
            self._finish(rid, None, "timeout")

    def _finish(self, rid: int, result: list[Contact] | None, outcome: str) -> None:
        req = self.reqs.pop(rid, None)
        if req is None:
            return
        self.m.rpcs.labels(req.rpc, outcome).inc()
        try:
            req.on_done(result)
        except Exception as e:  # a bug in one callback must not take the node down
            self.log.error(
                "internal_error", f"discovery callback failed: {e!r}", exc=traceback.format_exc()
            )
        self._close_idle_probe(req.link)

    def _close_idle_probe(self, link: Link | None) -> None:
        probe = self.probe_links.get(link) if link is not None else None
        if link is None or probe is None:
            return
        if not any(r in self.reqs for r in probe.reqs):
            link.close("discovery probe done")

    def on_reply(self, pid: bytes, msg: Nodes | KadPong, own_id: bytes) -> str | None:
        """An answer; returns a penalty reason when it answers nothing we asked that peer."""
        req = self.reqs.get(msg.req_id)
        want = "find" if isinstance(msg, Nodes) else "ping"
        if req is None or req.rpc != want or req.contact.node_id != pid:
            return f"unsolicited {type(msg).__name__}"
        found: list[Contact] = []
        if isinstance(msg, Nodes):
            found = [
                Contact(r.node_id, r.host, r.port)
                for r in msg.nodes
                if r.node_id != own_id and valid_host(r.host)
            ]
        self._finish(msg.req_id, found, "ok")
        return None

    # -- probes (the shell dials what probe_dials returns) ------------------------------------

    def probe_dials(self) -> list[str]:
        busy = len(self.probes_dialing) + len(self.probe_links)
        out: list[str] = []
        for addr in list(self.probes_wanted):
            if busy + len(out) >= self.cfg.kad_max_probes:
                break
            if addr in self.book.dialing:
                continue  # a peer dial of that address is in flight: its link will carry them
            probe = self.probes_wanted.pop(addr)
            if not probe.verify and not any(r in self.reqs for r in probe.reqs):
                continue  # its requests timed out while it waited
            link = self._link_to(probe.expected) if probe.expected is not None else None
            if link is not None and not probe.verify:
                self._flush_probe(probe, link)  # connected meanwhile: no probe needed
                continue
            self.probes_dialing[addr] = probe
            out.append(addr)
        return out

    def claims(self, conn: Link) -> bool:
        # by the dial, not the address: a peer dial and a probe to one address can be in
        # flight at once, and the peer dial taken for the probe would leave the probe (which
        # announced no listen port) as the peer connection
        return conn.outbound and conn.probe and conn.dialed_addr in self.probes_dialing

    def is_probe(self, conn: Link) -> bool:
        return conn in self.probe_links

    def on_probe_open(self, conn: Link) -> str | None:
        """A probe's handshake completed (the key is proven at the address); returns a reason
        to close it now, or None while it carries requests."""
        assert conn.dialed_addr is not None and conn.peer_id is not None
        probe = self.probes_dialing.pop(conn.dialed_addr)
        pid = conn.peer_id
        if probe.expected is not None and probe.expected != pid:
            self.m.probes.labels("wrong_key").inc()
            for rid in probe.reqs:
                self._finish(rid, None, "wrong_key")
            self.log.info(
                "kad_wrong_key",
                f"discovery probe {probe.addr}: expected {short(probe.expected)}, "
                f"handshake proved {short(pid)}",
                addr=probe.addr,
                expected=probe.expected.hex(),
                peer=pid.hex(),
            )
            c = contact_at(pid, conn.dialed_addr)
            if c is not None:
                self.on_verified(c)  # the referral lied, but whoever is there proved its key
            return "discovery probe: not the key we were told"
        if self.book.peer_banned(pid):
            self.m.probes.labels("banned").inc()
            for rid in probe.reqs:
                self._finish(rid, None, "banned")
            return f"refused: peer {short(pid)} is banned"
        self.m.probes.labels("ok").inc()
        c = contact_at(pid, conn.dialed_addr)
        if c is not None:
            self.on_verified(c)
        if pid in self.peering.conns:
            # connected meanwhile (or a dial-back of a peer that dialled us): the requests go
            # over the peer connection and the probe ends; the remote keeps its settled one
            self._flush_probe(probe, self.peering.conns[pid])
            return "discovery probe: already connected"
        probe.link = conn
        self.probe_links[conn] = probe
        self._flush_probe(probe, conn)
        self._close_idle_probe(conn)
        return None

    def _flush_probe(self, probe: _Probe, link: Link | None) -> None:
        if link is None:
            return
        for rid in probe.reqs:
            req = self.reqs.get(rid)
            if req is not None and req.link is None:
                self._send(link, req)

    def on_probe_closed(self, conn: Link) -> None:
        probe = self.probe_links.pop(conn, None)
        if probe is None:
            return
        for rid in probe.reqs:
            if rid in self.reqs:
                self._finish(rid, None, "closed")

    def probe_ended(self, addr: str, why: str) -> None:
        """The shell's dial of a probe ended; if it never opened, its requests failed."""
        probe = self.probes_dialing.pop(addr, None)
        if probe is None:
            return
        self.m.probes.labels("failed").inc()
        for rid in probe.reqs:
            self._finish(rid, None, "unreachable")
