"""A gossiped block far ahead of the tip switches the node into sync (a verified height claim)
instead of parking it in the orphan pool; a forged far-ahead block does neither."""

from __future__ import annotations

from pathlib import Path

from netdiag.node.messages import TOPIC_BLOCKS, GetBlocks, Publish
from tests.unit.node.nodekit import RawPeer, api, client_ssl, node_cfg, running
from tests.unit.node.synckit import build_chain, forge, long_lab


async def test_far_ahead_gossip_starts_sync_not_orphan(tmp_path: Path) -> None:
    gpath, spec, keys = long_lab(tmp_path, 100)
    blocks = build_chain(spec, keys, 100)
    async with running(node_cfg(tmp_path, "n", gpath, produce=False, log_level="info")) as (
        node,
        out,
    ):
        peer = RawPeer(node)
        await peer.connect(client_ssl(tmp_path, peer.identity))
        peer.send(Publish(TOPIC_BLOCKS, forge(blocks[98]).encode()))  # forged: no claim
        peer.send(Publish(TOPIC_BLOCKS, blocks[99].encode()))  # block 100, tip is 0
        await peer.read_until(
            lambda got: any(isinstance(m, GetBlocks) and m.count > 1 for m in got)
        )
        first = next(m for m in peer.received if isinstance(m, GetBlocks) and m.count > 1)
        assert first.start == 1  # the download window starts right above our tip
        assert node.chain is not None and len(node.chain.orphans) == 0
        assert node.chain.height == 0  # nothing stored before it is verified
        assert '"event": "block_far_ahead"' in out.getvalue()
        _, st = await api(node, "/status")
        assert st["head_height"] == 100 and st["sync_distance"] == 100
        assert st["synchronized"] is False and st["sync_phase"] == "downloading"
