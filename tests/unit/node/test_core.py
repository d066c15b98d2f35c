"""The sans-IO core under a manual clock: deterministic, no sockets, no sleeps."""

from __future__ import annotations

from pathlib import Path

from netdiag.node.core import NodeCore
from netdiag.node.genesis import GenesisSpec
from netdiag.node.messages import TOPIC_BLOCKS, Ping, Publish, Status
from netdiag.node.model import make_block
from netdiag.node.schedule import producer_for, round_for
from tests.unit.node.corekit import World, lab


def ROOT(spec: GenesisSpec) -> bytes:
    return spec.block().header.state_root


def mesh(world: World, cores: list[NodeCore]) -> None:
    for i, a in enumerate(cores):
        for b in cores[i + 1 :]:
            world.connect(a, b)


def test_three_validators_build_one_chain_on_the_schedule(tmp_path: Path) -> None:
    spec, keys = lab(3)
    world = World(tmp_path, spec)
    cores = [world.node(f"v{i}", key=k) for i, k in enumerate(keys)]
    mesh(world, cores)
    world.run(20.0)
    heights = [c.height for c in cores]
    assert min(heights) >= 10, heights  # 40 slots of manual time; quorum of 3
    top = min(heights)
    tips = {c.chain.store.hash_at(top) for c in cores}
    assert len(tips) == 1, "all three agree on every block up to the lowest tip"
    store = cores[0].chain.store
    for h in range(1, top + 1):
        b = store.block_at(h)
        assert b is not None and b.header.producer in spec.validators


def test_per_ip_inbound_limit_refuses_the_next_socket(tmp_path: Path) -> None:
    spec, _ = lab(1)
    world = World(tmp_path, spec)
    core = world.node("n", max_inbound_per_ip=2)
    links = [world.attach(core, host="10.1.1.1") for _ in range(3)]
    assert [ln.is_open for ln in links] == [True, True, False]
    assert len(core.conns) == 2
    other = world.attach(core, host="10.1.1.2")
    assert other.is_open, "another address is not affected"


def test_a_forged_gossip_block_is_rejected_and_scored(tmp_path: Path) -> None:
    spec, keys = lab(1)
    world = World(tmp_path, spec)
    core = world.node("n")
    peer = world.attach(core)
    ts = world.clock.wall_ms()
    block = make_block(
        keys[0], spec.network_id, 1, core.chain.tip_hash, ts, [], state_root=ROOT(spec)
    )
    forged = block.encode()[:-1] + bytes([block.encode()[-1] ^ 1])
    peer.receive(Publish(TOPIC_BLOCKS, forged), len(forged))
    world.run(0.1)
    assert core.height == 0
    assert core.gossip.score(peer.peer_id or b"") < 0
    assert world.events("n", "block_rejected")


def test_a_new_peer_is_told_our_status(tmp_path: Path) -> None:
    spec, _ = lab(1)
    world = World(tmp_path, spec)
    core = world.node("n")
    peer = world.attach(core)
    assert any(isinstance(m, Status) and m.height == 0 for m in peer.sent)


def test_a_validator_trying_every_future_round_it_owns_gets_none_accepted(tmp_path: Path) -> None:
    spec, keys = lab(3)
    world = World(tmp_path, spec)
    honest = world.node("h", key=keys[0], produce=False)
    attacker = keys[1]
    link = world.attach(honest, peer_id=attacker.node_id)
    tip = honest.chain.tip
    now = world.clock.wall_ms()
    slot = spec.params.slot_ms
    current = round_for(tip.header.timestamp_ms, now, slot)
    seed = spec.block().hash
    owned = [
        r
        for r in range(current + 1, current + 60)
        if producer_for(spec.validators, seed, 1, r) == attacker.node_id
    ]
    assert owned, "the attacker owns some future round"
    for r in owned:
        ts = tip.header.timestamp_ms + (r + 1) * slot
        raw = make_block(
            attacker, spec.network_id, 1, tip.hash, ts, [], state_root=ROOT(spec)
        ).encode()
        link.receive(Publish(TOPIC_BLOCKS, raw), len(raw))
        world.sched.run_due()
    assert honest.height == 0, "no block for a future round was accepted"
    reasons = {e["reason"] for e in world.events("h", "block_rejected")}
    assert reasons == {"early"}
    assert not link.is_open and attacker.node_id in honest.book.banned, "repeated: banned"
    # The current round's block, by its scheduled producer, is accepted all the same.
    owner = producer_for(spec.validators, seed, 1, current)
    key = next(k for k in keys if k.node_id == owner)
    good = make_block(key, spec.network_id, 1, tip.hash, now, [], state_root=ROOT(spec)).encode()
    peer = world.attach(honest, host="10.2.2.2")
    peer.receive(Publish(TOPIC_BLOCKS, good), len(good))
    world.sched.run_due()
    assert honest.height == 1


def test_a_cheating_validator_gets_no_more_than_its_share(tmp_path: Path) -> None:
    """The lab hook bench attack uses: the cheater publishes for future rounds it owns at once;
    the honest pair refuses every early block, so the cheater never takes a future round."""
    spec, keys = lab(3)
    world = World(tmp_path, spec)
    honest = [world.node(f"v{i}", key=k) for i, k in enumerate(keys[:2])]
    cheater = world.node("v2", key=keys[2], debug_produce_future_rounds=True)
    mesh(world, [*honest, cheater])
    world.run(30.0)
    chain = honest[0].chain
    assert chain.height >= 20
    cheats = world.events("v2", "debug_future_round")
    assert cheats, "the hook published early blocks"
    reasons = {e["reason"] for e in world.events("v0", "block_rejected")}
    assert "early" in reasons and reasons <= {"early", "prev_hash"}  # stale: built on an old tip
    by_cheater = sum(
        1
        for h in range(1, chain.height + 1)
        if (b := chain.store.block_at(h)) is not None and b.header.producer == keys[2].node_id
    )
    assert by_cheater < len(cheats), "most cheats were refused"
    assert by_cheater <= chain.height / 2


def test_a_silent_peer_is_pinged_once_per_interval_not_every_heartbeat(tmp_path: Path) -> None:
    spec, _ = lab(1)
    world = World(tmp_path, spec)
    core = world.node("n", ping_interval_s=15.0, gossip_heartbeat_s=0.5, idle_timeout_s=600.0)
    peer = world.attach(core)
    world.run(60.0)
    pings = sum(isinstance(m, Ping) for m in peer.sent)
    assert 1 <= pings <= 4, pings  # 60 s / 15 s, not one per 0.5 s heartbeat


def test_headers_are_served_as_stored_without_decoding_transactions(tmp_path: Path) -> None:
    spec, keys = lab(1)
    world = World(tmp_path, spec)
    core = world.node("n", key=keys[0])
    world.run(5.0)
    assert core.height >= 3
    served = core.dispatcher.serve_headers(0, 100)
    stored = [core.chain.store.block_at(h) for h in range(core.height + 1)]
    assert served == [b.header.encode() for b in stored if b is not None]
