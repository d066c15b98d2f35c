"""Discovery in the sans-IO core: cores on a manual clock dial each other over in-memory links
(kadkit.NetWorld). A cluster forms from one bootstrap, the table survives a restart, the
least-recently-seen rule, wrong-key referrals, inbound-only peers, and strict decoding."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from netdiag.node.core import NodeCore
from netdiag.node.crypto import Identity
from netdiag.node.kademlia import Contact, kad_id
from netdiag.node.messages import FindNode, KadPing, KadPong, NodeRecord, Nodes
from netdiag.node.protocol import Violation, decode_message
from tests.unit.node.corekit import lab
from tests.unit.node.kadkit import NetWorld


def host(i: int) -> str:
    return f"10.0.{i}.1"  # one /24 per node: the subnet limits do not bite


def cluster(tmp: Path, n: int, **cfg: object) -> tuple[NetWorld, list[NodeCore]]:
    spec, _ = lab(1)
    world = NetWorld(tmp, spec)
    boot = world.peer("n0", host(0), **cfg)
    cores = [boot]
    for i in range(1, n):
        cores.append(world.peer(f"n{i}", host(i), peers=[world.addr(boot)], **cfg))
    return world, cores


def connected(cores: list[NodeCore]) -> bool:
    seen, todo = {cores[0].node_id}, [cores[0]]
    by_id = {c.node_id: c for c in cores}
    while todo:
        c = todo.pop()
        for pid in c.conns:
            if pid not in seen and pid in by_id:
                seen.add(pid)
                todo.append(by_id[pid])
    return len(seen) == len(cores)


def test_a_cluster_forms_from_one_bootstrap(tmp_path: Path) -> None:
    n = 24
    world, cores = cluster(tmp_path, n)
    world.run(30.0)
    # Everyone learns of everyone: at the latest, a bucket refresh (kad_refresh_s) finds the
    # nodes that never contacted this one. Manual time, so the budget costs no wall time.
    refresh = cores[0].cfg.kad_refresh_s
    world.run_until(
        lambda: all(len(c.discovery.table) >= min(20, n - 1) for c in cores), 2 * refresh
    )
    for c in cores:
        # who dialled whom depends on the join order; every node has its peers either way
        assert len(c.conns) >= c.cfg.target_outbound
        assert c.peering.outbound_count() <= c.cfg.target_outbound
        assert all(e.contact.node_id != c.node_id for e in c.discovery.table.entries())
    assert connected(cores)
    # everyone else's peers came from the table, not only the bootstrap
    assert sum(len(c.conns) for c in cores[1:]) > 2 * (n - 1)
    lookups = sum(c.discovery.stats.completed for c in cores)
    assert lookups >= n, "every node ran at least its join lookup"
    hops = [r.hops for c in cores for r in c.discovery.stats.recent if r.replies]
    assert hops and max(hops) <= 6


def test_bootstrap_peer_is_dialled_and_the_rest_come_from_the_table(tmp_path: Path) -> None:
    world, cores = cluster(tmp_path, 12)
    world.run(20.0)
    late = cores[-1]
    out = [c for c in late.conns.values() if c.outbound]
    assert len(late.conns) >= late.cfg.target_outbound
    dialled = {c.dialed_addr for c in out}
    assert world.addr(cores[0]) in dialled
    table_addrs = {e.contact.addr for e in late.discovery.table.entries()}
    assert dialled - {world.addr(cores[0])} <= table_addrs


def test_table_is_persisted_and_a_restart_needs_no_bootstrap(tmp_path: Path) -> None:
    world, cores = cluster(tmp_path, 10)
    world.run(20.0)
    node = cores[5]
    before = {e.contact.node_id for e in node.discovery.table.entries()}
    assert len(before) >= 9
    key = node.identity
    world.kill(node)
    node.close()
    node.chain.store.close()
    world.kill(cores[0])  # the bootstrap is gone too
    world.run(1.0)
    again = world.peer("n5", host(5), key=key)
    assert {e.contact.node_id for e in again.discovery.table.entries()} == before
    assert not again.cfg.peers, "no bootstrap given"
    world.run(10.0)
    # it dials peers from its stored table; the others, who knew it, may also dial it back
    assert again.peering.outbound_count() >= 2
    assert len(again.conns) >= 5
    assert world.events("n5", "kad_restored")


def test_least_recently_seen_is_pinged_before_eviction(tmp_path: Path) -> None:
    spec, _ = lab(1)
    world = NetWorld(tmp_path, spec)
    me = world.peer("me", host(0), kad_k=2, discovery=False)
    alive = world.peer("alive", host(1))
    table = me.discovery.table
    # fill the bucket the live node falls in with it (oldest) and one dead contact
    idx = table.bucket_of(alive.node_id)
    table.restore(Contact(alive.node_id, host(1), 7600), world.clock.now - 10)
    dead = next(
        Contact(k.node_id, f"10.1.{i % 250}.{i // 250 + 1}", 7600)
        for i, k in enumerate(Identity.generate() for _ in range(500))
        if table.bucket_of(k.node_id) == idx
    )
    table.restore(dead, world.clock.now - 5)
    newcomers = [
        Contact(k.node_id, f"10.2.{i % 250}.{i // 250 + 1}", 7600)
        for i, k in enumerate(Identity.generate() for _ in range(800))
        if table.bucket_of(k.node_id) == idx
    ][:2]
    me.discovery.offer(newcomers[0], "test")
    world.run(5.0)
    ids = {e.contact.node_id for e in table.buckets[idx]}
    assert alive.node_id in ids, "the live least-recently-seen entry answered and stays"
    assert newcomers[0].node_id not in ids
    assert table.buckets[idx][-1].contact.node_id == alive.node_id, "moved to the tail"
    # now the dead one is least recently seen: the next newcomer evicts it
    me.discovery.offer(newcomers[1], "test")
    world.run(5.0)
    ids = {e.contact.node_id for e in table.buckets[idx]}
    assert dead.node_id not in ids, "no answer to the liveness check: evicted"
    assert newcomers[1].node_id in ids or newcomers[0].node_id in ids


def test_a_referral_with_the_wrong_key_is_never_tabled(tmp_path: Path) -> None:
    spec, _ = lab(1)
    world = NetWorld(tmp_path, spec)
    me = world.peer("me", host(0))
    honest = world.peer("h", host(1))
    liar = world.attach(me, host=host(9))
    liar.listen_addr = f"{host(9)}:7600"  # the only contact me has: the lookup asks it
    world.run(1.0)
    fake = Identity.generate().node_id
    # the liar answers a lookup naming the honest node's address with a key it does not hold
    me.discovery.lookup(kad_id(b"somewhere"), "random")
    world.run(0.1)
    asks = [m for m in liar.sent if isinstance(m, FindNode)]
    assert asks
    reply = Nodes(asks[-1].req_id, [NodeRecord(fake, host(1), 7600)])
    liar.receive(reply, 64)
    world.run(5.0)
    assert fake not in me.discovery.table
    assert world.events("me", "kad_wrong_key")
    assert honest.node_id in me.discovery.table, "the probe proved who is really there"


def test_unsolicited_answers_cost_score(tmp_path: Path) -> None:
    spec, _ = lab(1)
    world = NetWorld(tmp_path, spec)
    me = world.peer("me", host(0))
    peer = world.attach(me, host=host(9))
    pid = peer.peer_id or b""
    before = me.gossip.score(pid)
    peer.receive(Nodes(123, []), 16)
    peer.receive(KadPong(77), 16)
    world.run(0.1)
    assert me.gossip.score(pid) < before


def test_inbound_peers_enter_the_table_only_after_a_dial_back(tmp_path: Path) -> None:
    spec, _ = lab(1)
    world = NetWorld(tmp_path, spec)
    me = world.peer("me", host(0))
    inbound_only = world.attach(me, host=host(7))  # listen_addr None: accepts no connections
    unreachable = world.attach(me, host=host(8))
    unreachable.listen_addr = f"{host(8)}:7600"  # claims a port nobody answers on
    me.discovery.peer_up(unreachable)
    reachable = world.peer("r", host(3), peers=[world.addr(me)])
    world.run(10.0)
    table = me.discovery.table
    assert inbound_only.peer_id not in table
    assert unreachable.peer_id not in table
    assert reachable.node_id in table, "its listen address answered with its key"
    assert me.conns[reachable.node_id].direction == "inbound" or reachable.node_id in me.conns


def test_banned_peers_leave_the_table_and_are_not_handed_out(tmp_path: Path) -> None:
    world, cores = cluster(tmp_path, 6)
    world.run(15.0)
    me, bad = cores[1], cores[2]
    assert bad.node_id in me.discovery.table
    me.policy.ban(me.conns[bad.node_id], "test: a provable offence")
    world.run(2.0)
    assert bad.node_id not in me.discovery.table
    assert bad.node_id not in me.conns
    asker = world.attach(me, host=host(40))
    asker.receive(FindNode(5, bad.discovery.kid), 64)
    world.run(0.1)
    answer = next(m for m in asker.sent if isinstance(m, Nodes) and m.req_id == 5)
    assert bad.node_id not in {r.node_id for r in answer.nodes}
    assert answer.nodes, "the others are still handed out"


def test_sybils_on_one_subnet_take_at_most_one_outbound_slot(tmp_path: Path) -> None:
    spec, _ = lab(1)
    world = NetWorld(tmp_path, spec)
    boot = world.peer("boot", host(0))
    honest = [world.peer(f"h{i}", host(i), peers=[world.addr(boot)]) for i in range(1, 11)]
    sybils = [  # they answer every FindNode with each other only (the LAB ONLY hook)
        world.peer(
            f"s{i}",
            f"10.66.0.{i}",
            peers=[world.addr(boot)],
            debug_kad_only_subnet="10.66.0.0/24",
        )
        for i in range(1, 33)
    ]
    world.run(20.0)
    victim = world.peer("victim", host(200), peers=[world.addr(boot)])
    world.run(30.0)
    out = [c for c in victim.conns.values() if c.outbound]
    on_sybil_net = [c for c in out if c.remote_host.startswith("10.66.0.")]
    assert len(out) >= victim.cfg.target_outbound - 1, "the honest nodes fill the rest"
    assert len(on_sybil_net) <= 1
    entries = victim.discovery.table.entries()
    assert sum(e.contact.host.startswith("10.66.0.") for e in entries) <= 10
    for b in victim.discovery.table.buckets:
        assert sum(e.contact.host.startswith("10.66.0.") for e in b) <= 2
    assert honest
    # bootstrapped from a Sybil that answers lookups with Sybils only, a node still dials at
    # most one of them (honest nodes reach it later through peer exchange and dial-backs)
    starved = world.peer("starved", host(201), peers=[world.addr(sybils[1])])
    world.run(30.0)
    out = [c for c in starved.conns.values() if c.outbound]
    assert sum(c.remote_host.startswith("10.66.0.") for c in out) <= 1
    assert victim.discovery.table.subnet_count("10.66.0.0/24") <= 10


@pytest.mark.parametrize(
    "raw",
    [
        {"t": "findnode", "req_id": 1, "target": b"\x00" * 31},
        {"t": "findnode", "req_id": -1, "target": b"\x00" * 32},
        {"t": "nodes", "req_id": 1, "nodes": [[b"\x00" * 32, "10.0.0.1", 7600]] * 21},
        {"t": "nodes", "req_id": 1, "nodes": [[b"\x00" * 32, "10.0.0.1", 0]]},
        {"t": "nodes", "req_id": 1, "nodes": [[b"\x00" * 32, "x" * 46, 7600]]},
        {"t": "kadping", "req_id": 1, "extra": 1},
    ],
)
def test_discovery_messages_decode_strictly(raw: dict[str, object]) -> None:
    assert isinstance(decode_message(msgspec.msgpack.encode(raw)), Violation)


def test_a_full_nodes_answer_is_small() -> None:
    recs = [NodeRecord(b"\xff" * 32, "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", 65535)] * 20
    assert len(msgspec.msgpack.encode(Nodes(2**62, recs))) < 2048
    assert isinstance(decode_message(msgspec.msgpack.encode(KadPing(3))), KadPing)


def test_a_low_scored_peer_is_dropped_and_never_dialled(tmp_path: Path) -> None:
    world, cores = cluster(tmp_path, 6)
    world.run(15.0)
    me, poor = cores[1], cores[3]
    assert poor.node_id in me.discovery.table
    me.gossip.penalize(poor.node_id, 30.0)  # below the gossip threshold, above the ban
    assert me.gossip.score(poor.node_id) < me.gossip.p.gossip_threshold
    world.run(1.5)
    assert poor.node_id not in me.discovery.table
    assert poor.discovery.table.get(me.node_id) is not None, "only me judged it"
    assert world.addr(poor) not in me.discovery.outbound_dials(8)


def test_a_second_outbound_peer_of_one_subnet_is_refused_at_the_handshake(tmp_path: Path) -> None:
    spec, _ = lab(1)
    world = NetWorld(tmp_path, spec)
    me = world.peer("me", host(0))
    a = world.peer("a", "10.66.0.1", discovery=False)
    b = world.peer("b", "10.66.0.2", discovery=False)
    for peer in (a, b):  # as if both were picked from the table at once
        me.discovery.out_dialing[world.addr(peer)] = peer.node_id
        world.dial(me, world.addr(peer), probe=False)
    world.run(0.5)
    out = [c for c in me.conns.values() if c.outbound]
    assert len(out) == 1, "one outbound peer per /24, whatever raced"
    assert b.node_id not in me.conns or a.node_id not in me.conns


def test_peer_exchange_addresses_are_verified_once_not_on_every_mention(tmp_path: Path) -> None:
    spec, _ = lab(1)
    world = NetWorld(tmp_path, spec)
    me = world.peer("me", host(0))
    other = world.peer("o", host(4))
    me.discovery.learn_addrs([world.addr(other), "not-an-address", "10.0.77.1:7600"])
    world.run(2.0)
    assert other.node_id in me.discovery.table, "proven by the probe's handshake"
    probes = world.probes
    me.discovery.drop(other.node_id, "test")
    for _ in range(5):
        me.discovery.learn_addrs([world.addr(other), "10.0.77.1:7600"])
        world.run(1.0)
    assert world.probes == probes, "mentioned again within a minute: not probed again"
