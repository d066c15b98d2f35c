"""A discovery probe to a peer that is already connected must not cost the pair its connection.

Seen in a loaded 3-node e2e run: the smaller node id probed a peer that had just dialed it; the
peer took the probe for the other side of a simultaneous dial (dialed by the smaller id, its own
connection young) and replaced its connection with it ("replaced by a simultaneous connection")
while the prober ended the probe ("discovery probe: already connected") — both connections
closed, /status peers 2 -> 1. A probe announces no listen port, which tells the remote.
"""

from __future__ import annotations

from pathlib import Path

from netdiag.node.core import NodeCore
from tests.unit.node.corekit import lab
from tests.unit.node.kadkit import NetWorld


def connected(a: NodeCore, b: NodeCore) -> bool:
    la, lb = a.conns.get(b.node_id), b.conns.get(a.node_id)
    return la is not None and lb is not None and la.is_open and lb.is_open


def ordered(world: NetWorld) -> tuple[NodeCore, NodeCore]:
    x = world.peer("x", "10.0.1.1")
    y = world.peer("y", "10.0.2.1")
    lo, hi = sorted((x, y), key=lambda c: c.node_id)
    return lo, hi


def probe(world: NetWorld, prober: NodeCore, target: NodeCore) -> None:
    prober.discovery.net.want_probe(world.addr(target), target.node_id)
    for addr in prober.probe_targets():
        world.dial(prober, addr, probe=True)


def test_a_probe_racing_a_young_connection_leaves_it_in_place(tmp_path: Path) -> None:
    spec, _ = lab(1)
    world = NetWorld(tmp_path, spec)
    small, big = ordered(world)
    world.dial(big, world.addr(small), probe=False)  # the bigger id dials: small holds it inbound
    world.run(0.05)
    assert connected(small, big)
    first = small.conns[big.node_id]

    probe(world, small, big)  # dialed by the smaller id while the first is young
    world.run(0.05)
    assert connected(small, big), "the probe must not cost the pair its connection"
    assert small.conns[big.node_id] is first
    world.run(30.0)
    assert connected(small, big) and small.conns[big.node_id] is first
    assert not world.events("x", "peer_disconnected") + world.events("y", "peer_disconnected")


def test_a_dial_racing_a_probe_it_received_replaces_the_probe(tmp_path: Path) -> None:
    spec, _ = lab(1)
    world = NetWorld(tmp_path, spec)
    small, big = ordered(world)
    probe(world, small, big)  # big holds the probe as an inbound connection first
    world.run(0.05)
    world.dial(big, world.addr(small), probe=False)  # then big's own dial completes
    world.run(30.0)
    assert connected(small, big), "big's dial is the pair's connection; the probe ended"
    assert big.conns[small.node_id].outbound


def test_a_probe_to_a_settled_peer_ends_and_the_peer_connection_stays(tmp_path: Path) -> None:
    spec, _ = lab(1)
    world = NetWorld(tmp_path, spec)
    small, big = ordered(world)
    world.dial(big, world.addr(small), probe=False)
    world.run(small.cfg.handshake_timeout_s + 1.0)  # settled: never replaced
    first = small.conns[big.node_id]

    probe(world, small, big)
    world.run(1.0)
    assert connected(small, big)
    assert small.conns[big.node_id] is first, "a settled connection is never replaced"


def test_a_peer_dial_and_a_probe_to_one_address_are_told_apart(tmp_path: Path) -> None:
    spec, _ = lab(1)
    world = NetWorld(tmp_path, spec)
    small, big = ordered(world)
    addr = world.addr(big)
    small.discovery.net.want_probe(addr, big.node_id)
    assert small.probe_targets() == [addr]
    small.book.dialing.add(addr)
    world.dial(small, addr, probe=False)  # the peer dial's handshake completes first
    world.dial(small, addr, probe=True)
    for _ in range(30):
        world.run(0.1)
        assert connected(small, big)
        assert not small.conns[big.node_id].probe, "the peer connection is the peer dial"
        assert big.conns[small.node_id].listen_addr == world.addr(small)
