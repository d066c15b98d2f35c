"""When a node takes snapshots (every ``snapshot_interval`` blocks) and how many it keeps."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from netdiag.node.chain import Chain
from netdiag.node.errors import StoreError
from netdiag.node.genesis import GenesisSpec
from netdiag.node.logs import NodeLog
from netdiag.node.model import Block, decode_block
from netdiag.node.snapshot import Manifest, SnapshotStore, build, snapshots_beside
from netdiag.node.state import Ledger, StateCopy, genesis_ledger
from netdiag.node.store import Store

T = TypeVar("T")
OffLoop = Callable[[Callable[[], T], Callable[[T], None]], None]


def inline(fn: Callable[[], T], done: Callable[[T], None]) -> None:
    done(fn())


class SnapshotPolicy:
    """Hooked into the chain: each block whose height is a multiple of the interval leaves
    a snapshot of the state right after it (chunks, then manifest), then old ones are
    pruned. A snapshot whose block a reorg later replaced is never served (``served``).

    The build (serialize, hash, write, prune) runs through ``off_loop`` — on the node, a
    worker thread — from a copy of the state taken on the loop at that block, so the loop goes
    on meanwhile; builds run one at a time (``_lock``), a manifest only after its chunks."""

    def __init__(
        self,
        chain: Chain,
        log: NodeLog,
        interval: int,
        keep: int,
        chunk_bytes: int,
        off_loop: OffLoop[object] = inline,
    ) -> None:
        self.off_loop = off_loop
        self._lock = threading.Lock()
        self._building: set[int] = set()
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
        if block.height in self._building or self.store.manifest(block.height) is not None:
            return  # already taken (a restart replaying the same blocks)
        self._building.add(block.height)
        state = StateCopy(self.chain.ledger)  # on the loop: the state right after this block
        network_id = self.chain.genesis.network_id

        def work() -> object:
            t0 = time.perf_counter()
            try:
                with self._lock:
                    manifest, chunks = build(state, block, network_id, self.chunk_bytes)
                    self.store.save(manifest, chunks)
                    dropped = self.store.prune(self.keep)
            except Exception as e:  # off the loop: reported back, never lost
                return e
            return manifest, dropped, time.perf_counter() - t0, len(state.accounts)

        self.off_loop(work, lambda out: self._built(block, out))

    def _built(self, block: Block, out: object) -> None:
        self._building.discard(block.height)
        if isinstance(out, Exception):
            self.log.error(
                "snapshot_failed",
                f"snapshot at {block.height} not taken: {out!r}",
                height=block.height,
            )
            return
        assert isinstance(out, tuple)
        manifest, dropped, took, accounts = out
        assert isinstance(manifest, Manifest)
        self.created += 1
        self.log.info(
            "snapshot_created",
            f"snapshot at {block.height}: {len(manifest.chunks)} chunks, "
            f"{sum(r.size for r in manifest.chunks)} bytes, {accounts} accounts "
            f"in {took:.3f} s off the loop (pruned {dropped or 'none'})",
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
