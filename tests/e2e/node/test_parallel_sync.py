"""A fresh node joins three nodes holding 5,000 blocks and syncs to their tip — with all three
honest, with one serving a forged segment, with one that stalls. Real nodes on loopback (TLS,
SQLite); the chain is built in process and written into the servers' stores."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest

from netdiag.node.config import NodeConfig
from netdiag.node.daemon import Node
from netdiag.node.logs import NodeLog
from netdiag.node.model import Block
from tests.unit.node.nodekit import api, node_cfg, wait_for
from tests.unit.node.synckit import (
    ForgingNode,
    StallingNode,
    build_chain,
    long_lab,
    seed_store,
)

pytestmark = pytest.mark.e2e

N = 5000


@asynccontextmanager
async def running_as(cls: type[Node], cfg: NodeConfig) -> AsyncIterator[tuple[Node, io.StringIO]]:
    out = io.StringIO()
    node = cls(cfg, NodeLog(Path(cfg.data_dir).name, out, cfg.log_level))
    await node.start()
    try:
        yield node, out
    finally:
        await node.stop()


def events(out: io.StringIO, name: str) -> list[dict[str, object]]:
    recs = [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]
    return [r for r in recs if r.get("event") == name]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object, list[Block]]:
    tmp = tmp_path_factory.mktemp("synclab")
    gpath, spec, keys = long_lab(tmp, N)
    return gpath, spec, build_chain(spec, keys, N)


async def _run(
    tmp: Path, lab: tuple[Path, object, list[Block]], kinds: list[type[Node]]
) -> tuple[Node, io.StringIO, list[Node], dict[str, object]]:
    gpath, spec, blocks = lab
    async with AsyncExitStack() as stack:
        servers: list[Node] = []
        for i, cls in enumerate(kinds):
            cfg = node_cfg(tmp, f"s{i}", gpath, produce=False, log_level="info")
            seed_store(Path(cfg.data_dir), spec, blocks)  # type: ignore[arg-type]
            node, _ = await stack.enter_async_context(running_as(cls, cfg))
            servers.append(node)
        cfg = node_cfg(
            tmp,
            "joiner",
            gpath,
            produce=False,
            log_level="info",
            peers=[f"127.0.0.1:{s.listen_port}" for s in servers],
        )
        joiner, out = await stack.enter_async_context(running_as(Node, cfg))
        await wait_for(lambda: joiner.height == N, 90, f"joiner at height {N}")
        await wait_for(lambda: joiner.synchronized(), 10, "synchronized")
        await wait_for(lambda: joiner.status()["height"] == N, 30, "all of it on disk")
        _, status = await api(joiner, "/status")
        assert joiner.chain is not None
        for h in (1, 1336, 1337, 1338, 2500, N):  # the joiner holds exactly the served chain
            assert joiner.chain.store.hash_at(h) == blocks[h - 1].hash
        # the store verifies: no gap, links, signatures of the top blocks
        assert joiner.chain.store.verify(depth=N) == N
        return joiner, out, servers, status


async def test_fresh_node_syncs_5000_blocks_from_three(
    tmp_path: Path, lab: tuple[Path, object, list[Block]]
) -> None:
    joiner, out, _servers, st = await _run(tmp_path, lab, [Node, Node, Node])
    assert st["synchronized"] is True and st["sync_distance"] == 0
    assert st["head_height"] == N and st["sync_phase"] == "following"
    view = st["sync"]
    assert isinstance(view, dict)
    served = [p["blocks_served"] for p in view["peers"]]
    assert sum(1 for x in served if x > 0) >= 2, f"ranges not spread over peers: {served}"
    assert view["chain_breaks"] == 0 and view["bans"] == 0
    started = events(out, "sync_started")
    assert started and "(2 verified peers agree)" in str(started[0]["msg"])
    assert events(out, "sync_finished")
    # the 50 epoch boundaries it synced through are history: at most the last one is checked
    assert len(joiner.entropy.history) <= 1


async def test_sync_completes_around_a_forging_peer_and_bans_it(
    tmp_path: Path, lab: tuple[Path, object, list[Block]]
) -> None:
    joiner, out, servers, st = await _run(tmp_path, lab, [Node, ForgingNode, Node])
    forger = servers[1].node_id
    breaks = events(out, "sync_chain_break")
    assert breaks, "the forged block was never served to the joiner"
    b = breaks[0]
    assert b["height"] >= 1337 and b["peer"] == forger.hex() and b["reason"] == "prev_hash"
    h = b["height"]
    expected = lab[2][h - 2].hash[:6].hex()  # type: ignore[index]
    assert str(b["msg"]).startswith(f"chain break at {h}: expected prev_hash 0x{expected}…, got 0x")
    assert f"from peer {forger[:6].hex()}…" in str(b["msg"])
    assert joiner.book.peer_banned(forger)
    assert any(e["peer"] == forger.hex() for e in events(out, "peer_banned"))
    assert forger.hex() not in {p["peer_id"] for p in st["sync"]["peers"]}  # type: ignore[index]


async def test_sync_completes_around_a_stalling_peer(
    tmp_path: Path, lab: tuple[Path, object, list[Block]]
) -> None:
    _joiner, out, servers, st = await _run(tmp_path, lab, [Node, StallingNode, Node])
    staller = servers[1].node_id.hex()
    stalls = events(out, "sync_stall")
    # (on a heavily loaded machine an honest peer may stall too: only the staller must)
    mine = [s for s in stalls if s["peer"] == staller]
    assert mine and mine[0]["timeout_s"] == 4.0  # 2 s doubled
    view = st["sync"]
    peer = next(p for p in view["peers"] if p["peer_id"] == staller)  # type: ignore[index]
    assert peer["blocks_served"] <= 1 and peer["stalls"] >= 1
