"""Sync test helpers: a long valid chain built in process (no real-time production) and
written straight into several nodes' stores, plus misbehaving serving nodes."""

from __future__ import annotations

import time
from pathlib import Path

import msgspec

from netdiag.node.chain import Chain
from netdiag.node.config import NodeConfig
from netdiag.node.core import NodeCore
from netdiag.node.crypto import Identity
from netdiag.node.daemon import Node
from netdiag.node.debug import forge as forge
from netdiag.node.genesis import ChainParams, GenesisSpec, lab_genesis, write_lab
from netdiag.node.link import Link
from netdiag.node.logs import NodeLog
from netdiag.node.messages import GetBlocks, Message
from netdiag.node.model import Block, make_block
from netdiag.node.schedule import epoch_seed_height, producer_for
from netdiag.node.store import Store

SLOT_MS = 10


def long_lab(
    tmp: Path, n_blocks: int, validators: int = 3, epoch: int = 100, seed: str = "sync"
) -> tuple[Path, GenesisSpec, list[Identity]]:
    """A genesis far enough in the past that ``n_blocks`` one-slot blocks end before now."""
    ts = int(time.time() * 1000) - (n_blocks + 1000) * SLOT_MS
    spec, keys = lab_genesis(
        validators, seed, "nd-test", ts, ChainParams(epoch_length=epoch, slot_ms=SLOT_MS)
    )
    write_lab(tmp, spec, keys)
    return tmp / "genesis.json", spec, keys


def build_chain(spec: GenesisSpec, keys: list[Identity], n: int) -> list[Block]:
    """Blocks 1..n, each produced by its scheduled round-0 producer one slot after its parent."""
    by_id = {k.node_id: k for k in keys}
    parent = spec.block()
    hashes = {0: parent.hash}
    out: list[Block] = []
    for h in range(1, n + 1):
        seed = hashes[epoch_seed_height(h, spec.params.epoch_length)]
        key = by_id[producer_for(spec.validators, seed, h, 0)]
        ts = parent.header.timestamp_ms + spec.params.slot_ms
        b = make_block(key, spec.network_id, h, parent.hash, ts, [])
        hashes[h] = b.hash
        out.append(b)
        parent = b
    return out


def seed_store(data_dir: Path, spec: GenesisSpec, blocks: list[Block]) -> None:
    """Write genesis + ``blocks`` into a node's store in one transaction."""
    store = Store(data_dir / "chain.sqlite")
    try:
        store.init_genesis(spec.block())
        store.commit_blocks(blocks)
    finally:
        store.close()


class ForgingNode(Node):
    """Serves a forged segment: every block from ``forge_from`` up is a forgery (through the
    node's own lab-only hook, ``debug_forge_sync_from``)."""

    forge_from = 1337

    def __init__(self, cfg: NodeConfig, log: NodeLog) -> None:
        super().__init__(msgspec.structs.replace(cfg, debug_forge_sync_from=self.forge_from), log)


class StallingNode(Node):
    """Answers status and single-block (tip) queries but silently sits on every range."""

    def _make_core(self, chain: Chain) -> NodeCore:
        core = super()._make_core(chain)
        honest = core.dispatcher.dispatch

        def stalling(conn: Link, msg: Message, size: int) -> None:
            if isinstance(msg, GetBlocks) and msg.count > 1:
                return
            honest(conn, msg, size)

        core.dispatcher.dispatch = stalling  # type: ignore[method-assign]
        return core
