"""Kademlia without I/O: the XOR metric, bucket rules, subnet limits, and lookups converging
on a simulated network of 1,000 ids driven on a manual clock (dead nodes time out)."""

from __future__ import annotations

import math
import os
import random
import statistics

import pytest

from netdiag.node.kademlia import (
    Contact,
    Limits,
    Lookup,
    RoutingTable,
    bucket_index,
    distance,
    kad_id,
    random_id_in_bucket,
    subnet,
)
from netdiag.node.runtime import ManualClock, ManualScheduler


def nid(i: int) -> bytes:
    return i.to_bytes(4, "big") * 8


def contact(i: int, host: str | None = None) -> Contact:
    return Contact(nid(i), host or f"10.{(i >> 8) & 255}.{i & 255}.1", 7600)


def test_xor_distance_is_a_metric() -> None:
    ids = [kad_id(os.urandom(32)) for _ in range(30)]
    for a in ids:
        assert distance(a, a) == 0
        for b in ids:
            assert distance(a, b) == distance(b, a)
            assert (distance(a, b) == 0) == (a == b)
            for c in ids[:5]:
                assert distance(a, c) <= distance(a, b) + distance(b, c)  # XOR: ^ <= +


def test_xor_unidirectional_and_bucket_index() -> None:
    own = kad_id(b"me")
    # for a given distance there is exactly one id: a ^ d
    d = 12345
    other = (int.from_bytes(own, "big") ^ d).to_bytes(32, "big")
    assert distance(own, other) == d
    assert bucket_index(own, own) == -1
    flip_top = (int.from_bytes(own, "big") ^ (1 << 255)).to_bytes(32, "big")
    assert bucket_index(own, flip_top) == 255
    flip_low = (int.from_bytes(own, "big") ^ 1).to_bytes(32, "big")
    assert bucket_index(own, flip_low) == 0
    for b in (0, 7, 100, 255):
        t = random_id_in_bucket(own, b, os.urandom(32))
        assert bucket_index(own, t) == b


def test_subnet_groups_ipv4_by_24_and_ipv6_by_48() -> None:
    assert subnet("10.1.2.3") == subnet("10.1.2.200") != subnet("10.1.3.3")
    assert subnet("2001:db8:1:2::1") == subnet("2001:db8:1:ffff::9") != subnet("2001:db8:2::1")
    assert subnet("::ffff:10.1.2.3") == subnet("10.1.2.9")


def full_bucket_table(k: int = 4) -> tuple[RoutingTable, ManualClock, list[Contact]]:
    clock = ManualClock()
    own = nid(0)
    t = RoutingTable(own, Limits(k=k, per_subnet_bucket=k, per_subnet_table=100), clock.monotonic)
    far = [c for c in (contact(i) for i in range(1, 400)) if t.bucket_of(c.node_id) == 255]
    for c in far[:k]:
        clock.now += 1
        assert t.offer(c) == ("added", None)
    return t, clock, far


def test_full_bucket_asks_for_a_liveness_check_of_the_least_recently_seen() -> None:
    t, _, far = full_bucket_table()
    newcomer = far[4]
    outcome, check = t.offer(newcomer)
    assert outcome == "full" and check == far[0], "the oldest entry is checked, none evicted"
    assert newcomer.node_id not in t and len(t.buckets[255]) == 4
    # the old entry answers: it stays and moves to the tail; the newcomer stays out
    assert t.seen(far[0].node_id)
    assert [e.contact for e in t.buckets[255]] == [far[1], far[2], far[3], far[0]]
    assert newcomer.node_id not in t


def test_a_dead_entry_is_evicted_and_the_waiting_contact_takes_its_place() -> None:
    t, _, far = full_bucket_table()
    _, check = t.offer(far[4])
    assert check is not None
    promoted = t.failed(check.node_id)
    assert promoted == far[4]
    assert check.node_id not in t and far[4].node_id in t
    assert t.buckets[255][-1].contact == far[4]


def test_known_contact_moves_to_the_tail() -> None:
    t, clock, far = full_bucket_table()
    clock.now += 5
    assert t.offer(far[1]) == ("updated", None)
    assert t.buckets[255][-1].contact == far[1]
    assert t.get(far[1].node_id) is not None and t.get(far[1].node_id).last_seen == clock.now  # type: ignore[union-attr]


def test_subnet_limits_per_bucket_and_per_table() -> None:
    clock = ManualClock()
    t = RoutingTable(nid(0), Limits(k=20, per_subnet_bucket=2, per_subnet_table=3), clock.monotonic)
    sybils = [Contact(os.urandom(32), f"192.0.2.{i}", 7600) for i in range(1, 40)]
    outcomes = [t.offer(c)[0] for c in sybils]
    assert outcomes.count("added") == 3, "at most 3 of one /24 in the table"
    assert set(outcomes) <= {"added", "subnet_bucket", "subnet_table"}
    for b in t.buckets:
        assert sum(e.contact.subnet == "192.0.2.0/24" for e in b) <= 2
    assert "subnet_bucket" in outcomes or "subnet_table" in outcomes
    other = Contact(os.urandom(32), "198.51.100.1", 7600)
    assert t.offer(other)[0] == "added", "another /24 is not affected"
    v6 = [Contact(os.urandom(32), f"2001:db8:7::{i:x}", 7600) for i in range(1, 10)]
    assert [t.offer(c)[0] for c in v6].count("added") == 3, "IPv6 counted by /48"


def test_own_id_is_never_tabled_and_closest_is_sorted() -> None:
    clock = ManualClock()
    t = RoutingTable(nid(0), Limits(per_subnet_bucket=20, per_subnet_table=1000), clock.monotonic)
    assert t.offer(Contact(nid(0), "10.0.0.1", 1))[0] == "self"
    for i in range(1, 300):
        t.offer(contact(i))
    target = kad_id(b"x")
    got = t.closest(target, 20)
    ds = [distance(c.kid, target) for c in got]
    assert ds == sorted(ds) and len(got) == 20
    everyone = sorted((e.contact for e in t.entries()), key=lambda c: distance(c.kid, target))
    assert got == everyone[:20]


# -- a simulated network of 1,000 ids ----------------------------------------------------------


class SimNet:
    """1,000 nodes, each with a routing table of its neighbourhood and a random sample; a
    query is answered after a per-node latency on the manual clock, dead nodes never answer
    and the per-request timeout fails them."""

    def __init__(self, n: int, seed: int, dead_frac: float = 0.0, k: int = 20) -> None:
        rnd = random.Random(seed)
        self.rnd = rnd
        self.clock = ManualClock()
        self.sched = ManualScheduler(self.clock)
        self.k = k
        self.contacts = [
            Contact(rnd.randbytes(32), f"10.{i >> 8}.{i & 255}.1", 7600) for i in range(n)
        ]
        self.tables: dict[bytes, RoutingTable] = {}
        limits = Limits(k=k)
        for c in self.contacts:
            t = RoutingTable(c.node_id, limits, self.clock.monotonic)
            # what a joined node holds: its neighbourhood (its self-lookup finds it) and a
            # random sample of the rest (refreshes and traffic)
            near = sorted(self.contacts, key=lambda o: distance(o.kid, c.kid))[:40]
            for other in [*near, *rnd.sample(self.contacts, min(n, 200))]:
                t.offer(other)
            self.tables[c.node_id] = t
        self.latency = {c.node_id: rnd.uniform(0.005, 0.1) for c in self.contacts}
        self.dead = {c.node_id for c in rnd.sample(self.contacts, int(n * dead_frac))}

    def lookup(self, origin: Contact, target: bytes, timeout_s: float = 1.0) -> Lookup:
        table = self.tables[origin.node_id]
        lk = Lookup(target, table.closest(target, self.k), origin.node_id, self.k, 3)
        pending: set[bytes] = set()

        def pump() -> None:
            for c in lk.next_queries():
                pending.add(c.node_id)

                def answer(c: Contact = c) -> None:
                    if c.node_id in pending:
                        pending.discard(c.node_id)
                        lk.on_reply(c.node_id, self.tables[c.node_id].closest(target, self.k))
                        pump()

                def timeout(c: Contact = c) -> None:
                    if c.node_id in pending:
                        pending.discard(c.node_id)
                        lk.on_failure(c.node_id)
                        pump()

                if c.node_id not in self.dead:
                    self.sched.call_later(self.latency[c.node_id], answer)
                self.sched.call_later(timeout_s, timeout)

        pump()
        for _ in range(10_000):
            if lk.done:
                break
            self.sched.advance(0.05)
        assert lk.done
        return lk

    def true_closest(self, target: bytes, n: int, alive_only: bool = False) -> list[bytes]:
        pool = [c for c in self.contacts if not (alive_only and c.node_id in self.dead)]
        pool.sort(key=lambda c: distance(c.kid, target))
        return [c.node_id for c in pool[:n]]


def test_lookups_converge_on_1000_ids_in_few_hops() -> None:
    net = SimNet(1000, seed=7)
    hops, exact = [], 0
    for _ in range(60):
        origin = net.rnd.choice(net.contacts)
        target = kad_id(net.rnd.randbytes(32))
        lk = net.lookup(origin, target)
        got = [c.node_id for c in lk.result()]
        truth = [n for n in net.true_closest(target, 21) if n != origin.node_id][:20]
        exact += got == truth
        assert got[0] == truth[0], "the nearest node in the network is always found"
        assert len(set(got) & set(truth)) >= 18
        hops.append(lk.hops)
        assert lk.queries <= 60
    assert exact >= 55, f"{exact}/60 lookups found exactly the 20 nearest"
    assert statistics.median(hops) <= math.ceil(math.log2(1000))
    assert max(hops) >= 1


def test_lookups_route_around_dead_nodes_by_timeout() -> None:
    net = SimNet(1000, seed=11, dead_frac=0.2)
    for _ in range(30):
        origin = net.rnd.choice([c for c in net.contacts if c.node_id not in net.dead])
        target = kad_id(net.rnd.randbytes(32))
        lk = net.lookup(origin, target)
        got = [c.node_id for c in lk.result()]
        assert not set(got) & net.dead, "a node that never answered is not a result"
        truth = [n for n in net.true_closest(target, 21, alive_only=True) if n != origin.node_id]
        assert got[0] == truth[0]
        assert len(set(got) & set(truth[:20])) >= 16


def test_a_lookup_seeded_with_a_far_node_walks_closer_each_hop() -> None:
    net = SimNet(1000, seed=3)
    origin = net.contacts[0]
    target = net.contacts[500].kid
    far = max(net.contacts, key=lambda c: distance(c.kid, target))
    lk = Lookup(target, [far], origin.node_id, 20, 3)
    step_best: list[int] = []
    while not lk.done:
        qs = lk.next_queries()
        for c in qs:
            lk.on_reply(c.node_id, net.tables[c.node_id].closest(target, 20))
        best = min(distance(c.kid, target) for c in lk.result())
        step_best.append(best)
    assert step_best == sorted(step_best, reverse=True), "never moves away from the target"
    assert lk.result()[0].node_id == net.contacts[500].node_id
    assert lk.hops >= 2


@pytest.mark.parametrize("max_queries", [5, 60])
def test_lookup_query_budget_bounds_an_adversary(max_queries: int) -> None:
    target = kad_id(b"t")
    lk = Lookup(target, [contact(1)], nid(0), 20, 3, max_queries=max_queries)
    fresh = 2
    while not lk.done:
        for c in lk.next_queries():
            # every answer names 20 brand-new "closer" nodes: the lookup must still end
            lk.on_reply(c.node_id, [contact(fresh + j) for j in range(20)])
            fresh += 20
    assert lk.queries <= max_queries
