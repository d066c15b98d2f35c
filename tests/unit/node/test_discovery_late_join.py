"""A node that joins after everyone's refresh is learnt from its own lookups, not a minute
later at the next refresh: the FindNode it sends names its listen port and the node asked
verifies it by a dial-back probe before tabling it. Seeded keys, manual clock, in-memory links."""

from __future__ import annotations

import hashlib
from pathlib import Path

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from netdiag.node.core import NodeCore
from netdiag.node.crypto import Identity
from netdiag.node.messages import FindNode
from netdiag.node.protocol import Violation, decode_message
from tests.unit.node.corekit import lab
from tests.unit.node.kadkit import NetWorld

N = 12  # below k = 20: a join lookup asks every node


def key(i: int) -> Identity:
    seed = hashlib.sha256(f"late-join-{i}".encode()).digest()
    return Identity.from_private(Ed25519PrivateKey.from_private_bytes(seed))


def host(i: int) -> str:
    return f"10.0.{i}.1"  # one /24 per node: the subnet limits do not bite


def until(world: NetWorld, cond: object, budget_s: float, step_s: float = 0.5) -> bool:
    assert callable(cond)
    waited = 0.0
    while not cond() and waited < budget_s:
        world.run(step_s)
        waited += step_s
    return bool(cond())


def test_a_late_joiner_is_tabled_by_the_nodes_it_asked_before_their_refresh(
    tmp_path: Path,
) -> None:
    spec, _ = lab(1)
    world = NetWorld(tmp_path, spec)
    boot = world.peer("n0", host(0), key=key(0))
    old = [boot] + [
        world.peer(f"n{i}", host(i), key=key(i), peers=[world.addr(boot)]) for i in range(1, N)
    ]
    assert until(world, lambda: all(len(c.discovery.table) == N - 1 for c in old), 60.0)
    refresh = old[0].cfg.kad_refresh_s
    # the cluster is settled and every node has run its join lookup and first refreshes
    world.run(5.0)
    joined_at = world.clock.now
    late = world.peer("late", host(N), key=key(N), peers=[world.addr(boot)])

    def asked(c: NodeCore) -> bool:
        return late.node_id in c.discovery.table

    # well inside the old nodes' refresh period (none of them looks the joiner up meanwhile)
    assert until(world, lambda: all(asked(c) for c in old), refresh / 4)
    assert world.clock.now - joined_at < refresh / 2
    # most of them never had a connection with it: they learnt it from its requests
    connected = [c for c in old if late.node_id in c.conns]
    assert len(connected) < len(old)
    assert len(late.discovery.table) == N


def test_findnode_names_a_port_in_range_or_none() -> None:
    target = bytes(32)
    ok = decode_message(msgspec.msgpack.encode(FindNode(1, target, 7600)))
    assert isinstance(ok, FindNode) and ok.listen_port == 7600
    old = {"t": "findnode", "req_id": 1, "target": target}
    legacy = decode_message(msgspec.msgpack.encode(old))
    assert isinstance(legacy, FindNode) and legacy.listen_port == 0  # no port: nothing to verify
    bad = {"t": "findnode", "req_id": 1, "target": target, "listen_port": 70000}
    assert isinstance(decode_message(msgspec.msgpack.encode(bad)), Violation)
