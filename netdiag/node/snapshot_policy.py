"""When a node takes snapshots (every ``snapshot_interval`` blocks) and how many it keeps."""

from __future__ import annotations

import time

from netdiag.node.chain import Chain
from netdiag.node.errors import StoreError
from netdiag.node.genesis import GenesisSpec
from netdiag.node.logs import NodeLog
from netdiag.node.model import Block, decode_block
from netdiag.node.snapshot import Manifest, SnapshotStore, build, snapshots_beside
from netdiag.node.state import Ledger, genesis_ledger
from netdiag.node.store import Store


class SnapshotPolicy:
    """Hooked into the chain: each block whose height is a multiple of the interval leaves
    a snapshot of the state right after it (chunks, then manifest), then old ones are
    pruned. A snapshot whose block a reorg later replaced is never served (``served``)."""

    def __init__(
        self, chain: Chain, log: NodeLog, interval: int, keep: int, chunk_bytes: int
    ) -> None:
        self.chain = chain
        self.log = log
        self.interval = interval
        self.keep = keep
        self.chunk_bytes = chunk_bytes
        self.store = SnapshotStore(snapshots_beside(chain.store.path))
        self.created = 0
        if interval > 0:
            chain.on_advanced = self.on_block

    def on_block(self, block: Block) -> None:
        if block.height % self.interval or block.height == 0:
            return
        if self.store.manifest(block.height) is not None:
            return  # already taken (a restart replaying the same blocks)
        t0 = time.perf_counter()
        manifest, chunks = build(
            self.chain.ledger, block, self.chain.genesis.network_id, self.chunk_bytes
        )
        self.store.save(manifest, chunks)
        dropped = self.store.prune(self.keep)
        self.created += 1
        self.log.info(
            "snapshot_created",
            f"snapshot at {block.height}: {len(manifest.chunks)} chunks, "
            f"{sum(r.size for r in manifest.chunks)} bytes, {len(self.chain.ledger)} accounts "
            f"in {time.perf_counter() - t0:.3f} s (pruned {dropped or 'none'})",
            height=block.height,
            chunks=len(manifest.chunks),
            root=manifest.state_root.hex(),
        )

    def served(self) -> list[Manifest]:
        """The kept snapshots still on our chain, newest first."""
        return [
            m
            for m in reversed(list(self.store.manifests()))
            if self.chain.store.hash_at(m.height) == m.block_hash
        ]


def replay_state(store: Store, genesis: GenesisSpec, height: int) -> tuple[Ledger, Block]:
    """The state right after stored block ``height``, replayed from genesis (transactions
    only) and checked against that block's state root (offline tools: `node snapshot`)."""
    ledger = genesis_ledger(genesis.allocations, undo_depth=0)
    block = store.block_at(0)
    for raw in store.iter_range(1, height):
        block = decode_block(raw)
        ledger.advance(block)
    if block is None or block.height != height:
        raise StoreError(f"store {store.path} has no block {height}")
    if ledger.root() != block.header.state_root:
        raise StoreError(f"the state replayed to {height} does not match its header's root")
    return ledger, block
