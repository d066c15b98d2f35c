"""Sync test helpers: a long valid chain built in process (no real-time production) and
written straight into several nodes' stores, plus misbehaving serving nodes."""

from __future__ import annotations

from pathlib import Path

import msgspec

from netdiag.node import testkit
from netdiag.node.chain import Chain
from netdiag.node.config import NodeConfig
from netdiag.node.core import NodeCore
from netdiag.node.crypto import Identity
from netdiag.node.daemon import Node
from netdiag.node.debug import forge as forge
from netdiag.node.genesis import GenesisSpec
from netdiag.node.link import Link
from netdiag.node.logs import NodeLog
from netdiag.node.messages import GetBlocks, Message
from netdiag.node.model import Block

SLOT_MS = 10


def long_lab(
    tmp: Path, n_blocks: int, validators: int = 3, epoch: int = 100, seed: str = "sync"
) -> tuple[Path, GenesisSpec, list[Identity]]:
    """A genesis far enough in the past that ``n_blocks`` one-slot blocks end before now."""
    spec, keys = testkit.past_genesis(
        n_blocks, seed, validators=validators, slot_ms=SLOT_MS, epoch_length=epoch, out=tmp
    )
    return tmp / "genesis.json", spec, keys


def build_chain(spec: GenesisSpec, keys: list[Identity], n: int) -> list[Block]:
    """Blocks 1..n, each produced by its scheduled round-0 producer one slot after its parent."""
    return testkit.build_chain(spec, keys, n)


def seed_store(data_dir: Path, spec: GenesisSpec, blocks: list[Block]) -> None:
    """Write genesis + ``blocks`` into a node's store in one transaction."""
    testkit.seed_store(data_dir, spec, blocks)


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
