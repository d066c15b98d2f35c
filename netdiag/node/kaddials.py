"""Outbound peers chosen from the routing table (discovery's dials), and the rules that hold
at their handshake.

At most ``kad_outbound_per_subnet`` outbound peers per /24 (/48), counting the peers already
dialled and the configured bootstrap addresses (dialled as configured and exempt themselves;
their /24 counts as taken even while they reconnect), spread over buckets, live ones first.
The limit and the outbound target are checked again when a table dial's handshake completes:
a dial may have crossed a reconnect of the bootstrap.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from netdiag.node.config import NodeConfig, split_hostport
from netdiag.node.errors import ConfigError
from netdiag.node.kademlia import Contact, RoutingTable, subnet
from netdiag.node.link import Link
from netdiag.node.peering import Peering
from netdiag.node.peers import PeerBook
from netdiag.node.runtime import Clock


class TableDials:
    def __init__(
        self,
        cfg: NodeConfig,
        clock: Clock,
        table: RoutingTable,
        peering: Peering,
        book: PeerBook,
        usable: Callable[[Contact], bool],
    ) -> None:
        self.cfg = cfg
        self.clock = clock
        self.table = table
        self.peering = peering
        self.book = book
        self.usable = usable
        self.out_dialing: dict[str, bytes] = {}  # table dials in flight: addr -> node id

    def outbound_dials(self, budget: int, also: list[str] | None = None) -> list[str]:
        """Table entries to dial as outbound peers: at most ``kad_outbound_per_subnet`` per
        /24 (/48) counting the peers we already dialled, spread over buckets, live ones first."""
        if budget <= 0:
            return []
        conns = self.peering.conns
        nets = Counter(subnet_of(c.remote_host) for c in conns.values() if c.outbound)
        per_bucket = Counter(self.table.bucket_of(pid) for pid, c in conns.items() if c.outbound)
        pending = self.book.dialing | set(also or []) | self.bootstrap_addrs()
        for addr in pending - {c.dialed_addr for c in conns.values()}:
            nets[subnet_of_addr(addr)] += 1
        cands = [
            e
            for e in self.table.entries()
            if e.contact.node_id not in conns
            and e.contact.addr not in self.book.dialing
            and self._dial_due(e.contact.addr)
            and self.usable(e.contact)
        ]
        cands.sort(
            key=lambda e: (
                per_bucket[self.table.bucket_of(e.contact.node_id)],
                e.failures,
                -e.last_seen,
            )
        )
        out: list[str] = []
        for e in cands:
            if len(out) >= budget:
                break
            net = e.contact.subnet
            if nets[net] >= self.cfg.kad_outbound_per_subnet:
                continue
            nets[net] += 1
            per_bucket[self.table.bucket_of(e.contact.node_id)] += 1
            self.out_dialing[e.contact.addr] = e.contact.node_id
            out.append(e.contact.addr)
        return out

    def admit_outbound(self, conn: Link) -> str | None:
        """At the handshake of a peer we dialled from the table: the diversity and target rules
        hold whatever raced (a dial that crossed a reconnect of the bootstrap, say). Bootstrap
        addresses are dialled as configured and exempt; their /24 counts as taken."""
        addr = conn.dialed_addr
        st = self.book.addrs.get(addr or "")
        if addr is None or addr not in self.out_dialing or (st is not None and st.bootstrap):
            return None  # not a dial we chose from the table
        others = [c for c in self.peering.conns.values() if c.outbound and c is not conn]
        net = subnet_of(conn.remote_host)
        # a bootstrap address holds its /24's place even while it is reconnecting
        up = {c.dialed_addr for c in others}
        held = sum(subnet_of(c.remote_host) == net for c in others) + sum(
            subnet_of_addr(a) == net for a in self.bootstrap_addrs() - up
        )
        refusal = None
        if len(others) >= self.cfg.target_outbound:
            refusal = "discovery: outbound target reached"
        elif held >= self.cfg.kad_outbound_per_subnet:
            refusal = f"discovery: outbound peers of {net} at their limit"
        if refusal:
            self.out_dialing.pop(addr, None)
        return refusal

    def bootstrap_addrs(self) -> set[str]:
        return {a for a, st in self.book.addrs.items() if st.bootstrap}

    def _dial_due(self, addr: str) -> bool:
        st = self.book.addrs.get(addr)
        return st is None or st.next_try <= self.clock.monotonic()

    def dialled(self, addr: str) -> None:
        """A table dial's connection is up: it is no longer in flight."""
        self.out_dialing.pop(addr, None)

    def failed(self, addr: str) -> bool:
        """A table dial failed (connect, handshake or refusal): the entry's failures count; True
        when that evicted it."""
        pid = self.out_dialing.pop(addr, None)
        if pid is None or pid not in self.table:
            return False
        self.table.failed(pid, max_failures=3)
        return pid not in self.table


def subnet_of_addr(addr: str) -> str:
    try:
        return subnet_of(split_hostport(addr)[0])
    except ConfigError:
        return addr


def subnet_of(host: str) -> str:
    try:
        return subnet(host)
    except ValueError:
        return host
