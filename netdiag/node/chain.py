"""Chain state: the store plus the rules that decide what extends it, and the orphan pool.

``Chain.submit`` is the single entry for blocks from anywhere (gossip, sync, our own producer):
validate against the tip, commit atomically, then connect any orphans that now fit.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from netdiag.node.errors import ValidationError
from netdiag.node.genesis import GenesisSpec
from netdiag.node.model import Block
from netdiag.node.schedule import epoch_seed_height, producer_for, round_for
from netdiag.node.store import Store
from netdiag.node.validation import ChainView, Orphan, check_block


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class SubmitResult:
    accepted: list[Block] = field(default_factory=list)  # committed, in height order
    orphaned: bool = False  # held; caller should ask the sender for the missing range
    error: ValidationError | None = None
    duplicate: bool = False


class OrphanPool:
    """Blocks ahead of the tip, held in memory only (never stored), bounded, oldest dropped."""

    def __init__(self, max_blocks: int = 256) -> None:
        self.max_blocks = max_blocks
        self._by_hash: OrderedDict[bytes, Block] = OrderedDict()

    def __len__(self) -> int:
        return len(self._by_hash)

    def add(self, block: Block) -> None:
        self._by_hash[block.hash] = block
        while len(self._by_hash) > self.max_blocks:
            self._by_hash.popitem(last=False)

    def children_of(self, parent: bytes) -> list[Block]:
        return [b for b in self._by_hash.values() if b.header.prev_hash == parent]

    def discard(self, h: bytes) -> None:
        self._by_hash.pop(h, None)

    def prune_below(self, height: int) -> None:
        for h in [h for h, b in self._by_hash.items() if b.height <= height]:
            del self._by_hash[h]


class Chain:
    def __init__(
        self,
        store: Store,
        genesis: GenesisSpec,
        clock_ms: Callable[[], int] = now_ms,
        orphan_max: int = 256,
    ) -> None:
        self.store = store
        self.genesis = genesis
        self.params = genesis.params
        self.clock_ms = clock_ms
        self.orphans = OrphanPool(orphan_max)
        gblock = genesis.block()
        self.genesis_hash = gblock.hash
        store.init_genesis(gblock)
        self.height = store.verify()
        tip = store.block_at(self.height)
        assert tip is not None
        self.tip = tip

    @property
    def tip_hash(self) -> bytes:
        return self.tip.hash

    def seed_hash(self, height: int) -> bytes:
        h = self.store.hash_at(epoch_seed_height(height, self.params.epoch_length))
        assert h is not None, "seed block is below the tip, so it is stored"
        return h

    def view(self) -> ChainView:
        return ChainView(
            network_id=self.genesis.network_id,
            tip_height=self.height,
            tip_hash=self.tip.hash,
            tip_timestamp_ms=self.tip.header.timestamp_ms,
            validators=self.genesis.validators,
            seed_hash=self.seed_hash,
            has_block=self.store.has_block,
            has_tx=self.store.has_tx,
        )

    def scheduled_producer(self, ts_ms: int) -> tuple[bytes, int, int]:
        """(producer, height, round) for a block stamped ``ts_ms`` on the current tip."""
        height = self.height + 1
        round_ = max(0, round_for(self.tip.header.timestamp_ms, ts_ms, self.params.slot_ms))
        return (
            producer_for(self.genesis.validators, self.seed_hash(height), height, round_),
            height,
            round_,
        )

    def submit(self, block: Block, encoded_len: int | None = None) -> SubmitResult:
        res = SubmitResult()
        if self.store.has_block(block.hash):
            res.duplicate = True
            return res
        try:
            check_block(block, self.view(), self.params, self.clock_ms(), encoded_len)
        except Orphan as e:
            self.orphans.add(block)
            res.orphaned = True
            res.error = e
            return res
        except ValidationError as e:
            res.error = e
            return res
        self._commit(block)
        res.accepted.append(block)
        # Connect orphans that now extend the tip; each is fully validated like any block.
        while True:
            children = self.orphans.children_of(self.tip.hash)
            if not children:
                break
            progressed = False
            for child in children:
                self.orphans.discard(child.hash)
                try:
                    check_block(child, self.view(), self.params, self.clock_ms())
                except ValidationError:
                    continue
                self._commit(child)
                res.accepted.append(child)
                progressed = True
                break
            if not progressed:
                break
        self.orphans.prune_below(self.height)
        return res

    def _commit(self, block: Block) -> None:
        self.store.commit_block(block)
        self.tip = block
        self.height = block.height
