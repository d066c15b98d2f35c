"""The production quorum scales past the dial target: validators heard through the mesh count."""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack
from pathlib import Path

from netdiag.node.crypto import Identity
from netdiag.node.daemon import Node
from netdiag.node.presence import Presence, make_beacon
from tests.unit.node.nodekit import node_cfg, running, wait_for, write_lab_genesis

GH = b"\x11" * 32


def test_beacon_rules() -> None:
    keys = [Identity.generate() for _ in range(3)]
    now = [100.0]
    p = Presence([k.node_id for k in keys], GH, 3.0, lambda: now[0])
    t = int(time.time() * 1000)
    assert p.on_beacon(make_beacon(keys[1], GH, t), t) == ("accept", "")
    outsider = Identity.generate()
    assert p.on_beacon(make_beacon(outsider, GH, t), t)[0] == "reject"
    assert p.on_beacon(make_beacon(keys[2], b"\x22" * 32, t), t)[0] == "reject"  # other genesis
    assert p.on_beacon(make_beacon(keys[2], GH, t - 10_000), t)[0] == "ignore"  # stale/replayed
    assert p.on_beacon(b"\x93junk", t)[0] == "reject"
    assert p.reachable(set(), keys[0].node_id) == {keys[1].node_id}
    assert p.reachable({keys[2].node_id, outsider.node_id}, keys[0].node_id) == {
        keys[1].node_id,
        keys[2].node_id,
    }
    now[0] += 3.5  # the beacon expires: a partitioned validator stops counting
    assert p.reachable(set(), keys[0].node_id) == set()


def direct_validators(n: Node) -> int:
    return sum(pid in n.genesis.validators for pid in n.conns)


async def test_line_of_seven_validators_produce_and_a_minority_stops(
    tmp_path: Path,
) -> None:
    """7 validators in a line (one outbound, one inbound each): nobody is directly connected to
    a majority (4 of 7), yet they produce; with one down they go on, with four down the
    three left are a minority and stop within one beacon window."""
    v = 7
    gen, _, _ = write_lab_genesis(tmp_path, validators=v, slot_ms=200)
    async with AsyncExitStack() as stack:
        nodes: list[Node] = []
        for i in range(v):
            peers = [f"127.0.0.1:{nodes[-1].listen_port}"] if nodes else []
            cfg = node_cfg(
                tmp_path,
                f"n{i}",
                gen,
                str(tmp_path / f"validator-{i}.key"),
                tls=False,
                min_peers_to_produce=-1,
                target_outbound=1,
                max_outbound=1,
                max_inbound=1,
                presence_interval_s=0.3,
                peers=peers,
            )
            node, _ = await stack.enter_async_context(running(cfg))
            nodes.append(node)
        await wait_for(lambda: all(n.height >= 6 for n in nodes), timeout=60, what="production")
        assert max(direct_validators(n) for n in nodes) <= 2  # old rule: 1 + 2 < 4, no quorum
        assert all(n.quorum_connected() for n in nodes)
        assert nodes[0].chain is not None and nodes[6].chain is not None
        assert nodes[0].chain.store.hash_at(5) == nodes[6].chain.store.hash_at(5)

        await nodes[6].stop()  # one validator down: 6 of 7 still hear a majority
        h = nodes[0].height
        await wait_for(lambda: nodes[0].height >= h + 3, timeout=20, what="production, one down")
        for n in nodes[3:6]:  # three more down: {0,1,2} is a minority of 7
            await n.stop()
        rest = nodes[:3]
        await wait_for(
            lambda: not any(n.quorum_connected() for n in rest), timeout=10, what="quorum lost"
        )
        frozen = [n.height for n in rest]
        await asyncio.sleep(1.5)  # 7 slots
        assert [n.height for n in rest] == frozen
        assert all(n.status()["validator_quorum"] is False for n in rest)
