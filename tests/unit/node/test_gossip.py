"""Gossip router core: mesh maintenance, duplicates, IHAVE/IWANT caps and promises, scoring."""

from __future__ import annotations

import random

from netdiag.node.gossip import GossipParams, GossipRouter, message_id
from netdiag.node.messages import Graft, IHave, IWant, Prune, Publish


class Clock:
    t = 0.0

    def __call__(self) -> float:
        return self.t


def router(n_peers: int) -> tuple[GossipRouter, list[bytes], Clock]:
    clock = Clock()
    r = GossipRouter(GossipParams(), clock, random.Random(1))
    peers = [bytes([i]) * 32 for i in range(n_peers)]
    for p in peers:
        r.add_peer(p, outbound=True)
    return r, peers, clock


def test_mesh_degree_stays_within_bounds() -> None:
    r, peers, _ = router(20)
    assert len(r.mesh["blocks"]) == 6  # grafted on connect up to D
    for p in peers:  # everyone grafts us: above D_hi until the heartbeat trims
        r.on_graft(p, "blocks")
    assert len(r.mesh["blocks"]) == 20
    sends = r.heartbeat()
    assert len(r.mesh["blocks"]) == 6
    assert sum(isinstance(m, Prune) for _, m in sends) == 14
    for p in list(r.mesh["txs"])[:3]:
        r.remove_peer(p)
    sends = r.heartbeat()
    assert 4 <= len(r.mesh["txs"]) <= 12 and len(r.mesh["txs"]) == 6
    assert any(isinstance(m, Graft) for _, m in sends)


def test_duplicates_counted_not_forwarded_and_invalid_not_forwarded() -> None:
    r, peers, _ = router(8)
    data = b"tx-bytes"
    mid, rec, first = r.receive(peers[0], "txs", data)
    assert first and rec.first_peer == peers[0]
    fwd = r.validated(mid, data, "accept")
    assert fwd and all(isinstance(m, Publish) and pid != peers[0] for pid, m in fwd)
    assert {pid for pid, _ in fwd} == r.mesh["txs"] - {peers[0]}
    _, rec, first = r.receive(peers[1], "txs", data)
    assert not first and rec.duplicates == 1
    mid2, _, _ = r.receive(peers[2], "txs", b"bad")
    assert r.validated(mid2, b"bad", "reject") == []
    assert r.score(peers[2]) < 0 and r.score(peers[0]) > 0


def test_ihave_iwant_with_caps_and_broken_promises() -> None:
    r, peers, clock = router(3)
    unknown = [bytes([9, i]) * 16 for i in range(3)]
    sends = r.on_ihave(peers[0], "blocks", unknown)
    assert sends == [(peers[0], IWant(unknown))]
    assert r.on_ihave(peers[0], "blocks", unknown) == []  # already promised
    for _ in range(20):
        r.on_ihave(peers[1], "blocks", [b"\x01" * 32])
    assert r.peers[peers[1]].ihaves_this_heartbeat == 20
    assert r.on_ihave(peers[1], "blocks", [b"\x02" * 32]) == []  # over max_ihave_messages
    clock.t += 10  # promises expire undelivered
    r.heartbeat()
    assert r.score(peers[0]) < 0

    mid, _ = r.publish("blocks", b"block")
    served = [r.on_iwant(peers[2], [mid]) for _ in range(5)]
    assert sum(len(s) for s in served) == 3  # max_iwant_serves
    # gossip: a peer outside the mesh hears IHAVE for cached ids
    r.on_prune(peers[2], "blocks", 60)  # out of the mesh and not re-grafted
    sends = r.heartbeat()
    assert any(pid == peers[2] and isinstance(m, IHave) and mid in m.ids for pid, m in sends)


def test_graft_during_backoff_is_penalized_and_scores_decay() -> None:
    r, peers, clock = router(2)
    r.on_prune(peers[0], "blocks", 60)
    r.peers[peers[0]].backoff_until["blocks"] = clock.t + 60
    sends = r.on_graft(peers[0], "blocks")
    assert sends and isinstance(sends[0][1], Prune) and r.score(peers[0]) < 0
    r.penalize(peers[1], 50)
    s0 = r.score(peers[1])
    for _ in range(10):
        r.heartbeat()
    assert s0 < r.score(peers[1]) < 0


def test_publish_floods_and_seen_cache_expires() -> None:
    r, peers, clock = router(4)
    mid, sends = r.publish("txs", b"x")
    assert {p for p, _ in sends} == set(peers) and mid == message_id(b"x")
    assert r.publish("txs", b"x")[1] == []
    clock.t += 1000
    r.heartbeat()
    assert mid not in r.seen


def test_seen_cache_is_capped_oldest_first_and_a_pushed_out_message_is_new_again() -> None:
    clock = Clock()
    r = GossipRouter(GossipParams(seen_max=100), clock, random.Random(1))
    peer = b"p" * 32
    r.add_peer(peer, outbound=True)
    first = r.receive(peer, "txs", b"m0")[0]
    for i in range(1, 250):  # a flood of distinct valid messages within one TTL
        r.receive(peer, "txs", b"m%d" % i)
    assert len(r.seen) == 100 and r.seen_evicted == 150
    assert first not in r.seen and message_id(b"m249") in r.seen
    assert r.receive(peer, "txs", b"m249")[2] is False  # recent: still a duplicate
    assert r.receive(peer, "txs", b"m0")[2] is True  # pushed out: validated again (ingest
    # ignores a known tx before its signature), never lost


def test_node_config_sets_the_seen_cap_and_refuses_a_zero_one() -> None:
    import pytest

    from netdiag.node.config import load_config
    from netdiag.node.errors import ConfigError
    from netdiag.node.gossip import params_from

    env = {"NETDIAG_NODE_GOSSIP_SEEN_MAX": "7", "NETDIAG_NODE_GOSSIP_SEEN_TTL_S": "30"}
    p = params_from(load_config(None, env, {"data_dir": "/nonexistent", "genesis": "g.json"}))
    assert (p.seen_max, p.seen_ttl_s) == (7, 30.0)
    with pytest.raises(ConfigError, match="gossip_seen_max"):
        load_config(
            None,
            {"NETDIAG_NODE_GOSSIP_SEEN_MAX": "0"},
            {"data_dir": "/nonexistent", "genesis": "g.json"},
        )
