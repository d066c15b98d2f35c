"""The lab-only forging hook (``debug_forge_sync_from``) and what an honest syncer does about it."""

from __future__ import annotations

from pathlib import Path

from netdiag.node.config import load_config
from netdiag.node.messages import Blocks, GetBlocks
from netdiag.node.model import decode_block
from tests.unit.node.nodekit import RawPeer, node_cfg, running, wait_for
from tests.unit.node.synckit import build_chain, long_lab, seed_store

N = 20  # below sync_parallel_min's reach: the sequential follower does this catch-up


def test_hook_is_a_config_key_and_an_env_variable(tmp_path: Path) -> None:
    env = {"NETDIAG_NODE_DEBUG_FORGE_SYNC_FROM": "7"}
    cfg = load_config(None, env, {"data_dir": str(tmp_path), "genesis": "g.json"})
    assert cfg.debug_forge_sync_from == 7
    assert load_config(None, {}, {"data_dir": "d", "genesis": "g"}).debug_forge_sync_from == -1


async def test_forger_serves_forged_ranges_but_a_genuine_tip(tmp_path: Path) -> None:
    gpath, spec, keys = long_lab(tmp_path, N)
    blocks = build_chain(spec, keys, N)
    cfg = node_cfg(tmp_path, "f", gpath, produce=False, tls=False, debug_forge_sync_from=10)
    seed_store(Path(cfg.data_dir), spec, blocks)
    async with running(cfg) as (f, log):
        peer = RawPeer(f)
        await peer.connect(None)
        peer.send(GetBlocks(1, 5, 10))
        peer.send(GetBlocks(2, N, 1))
        await peer.read_until(lambda got: sum(isinstance(m, Blocks) for m in got) >= 2)
        rng, tip = [m for m in peer.received if isinstance(m, Blocks)]
        got = [decode_block(r) for r in rng.blocks]
        assert [b.height for b in got] == list(range(5, 15))
        assert [b.hash for b in got[:5]] == [b.hash for b in blocks[4:9]]  # 5..9 genuine
        assert all(b.signature == bytes(64) for b in got[5:])  # 10.. forged
        assert decode_block(tip.blocks[0]).hash == blocks[N - 1].hash
        assert '"event": "forged_segment_served"' in log.getvalue()


async def test_syncer_bans_a_forger_and_syncs_from_an_honest_peer(tmp_path: Path) -> None:
    gpath, spec, keys = long_lab(tmp_path, N)
    blocks = build_chain(spec, keys, N)
    honest_cfg = node_cfg(tmp_path, "h", gpath, produce=False, tls=False)
    seed_store(Path(honest_cfg.data_dir), spec, blocks)
    async with running(honest_cfg) as (honest, _):
        forger_cfg = node_cfg(
            tmp_path,
            "f",
            gpath,
            produce=False,
            tls=False,
            debug_forge_sync_from=1,
            peers=[f"127.0.0.1:{honest.listen_port}"],
        )
        seed_store(Path(forger_cfg.data_dir), spec, blocks)
        async with running(forger_cfg) as (forger, _):
            await wait_for(lambda: honest.node_id in forger.conns, what="forger meets honest")
            # the joiner knows only the forger: its first range request goes there
            joiner_cfg = node_cfg(
                tmp_path, "j", gpath, tls=False, peers=[f"127.0.0.1:{forger.listen_port}"]
            )
            async with running(joiner_cfg) as (joiner, jlog):
                await wait_for(lambda: joiner.height == N, what="joiner synced")
                assert joiner.chain is not None
                assert joiner.chain.tip_hash == blocks[-1].hash
                assert joiner.book.peer_banned(forger.node_id)
                assert forger.node_id not in joiner.conns
                assert joiner.metrics.bans.labels("peer")._value.get() >= 1
                assert joiner.metrics.blocks_rejected.labels("signature")._value.get() >= 1
                assert "served block 1 with a bad signature" in jlog.getvalue()
