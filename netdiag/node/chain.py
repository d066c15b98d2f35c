"""Chain state: the store plus the rules that decide what extends it, and the orphan pool.

``Chain.submit`` is the single entry for blocks from anywhere (gossip, sync, our own producer):
validate against the tip, commit atomically, then connect any orphans that now fit.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from netdiag.node.entropy import RevealCheck
from netdiag.node.errors import StoreError, ValidationError
from netdiag.node.genesis import GenesisSpec
from netdiag.node.model import Block, BlockHeader, decode_block, entropy_of
from netdiag.node.schedule import epoch_seed_height, producer_for, round_for
from netdiag.node.snapshot import BadSnapshot, SnapshotStore, check_manifest, snapshots_beside
from netdiag.node.state import Ledger, StateReader, genesis_ledger
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


class ReorgTooDeep(ValidationError):
    reason = "reorg_depth"


@dataclass
class ReorgResult:
    adopted: list[Block] = field(default_factory=list)  # now our chain above the fork point
    dropped: list[Block] = field(default_factory=list)  # were our chain; their txs go back
    depth: int = 0
    error: ValidationError | None = None


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
        self.reveals = (
            RevealCheck(genesis.validators, genesis.entropy_anchors, genesis.entropy_span)
            if genesis.entropy_anchors
            else None
        )
        self._seeds: OrderedDict[tuple[int, bytes], bytes] = OrderedDict()
        self.ledger = self._rebuild_state()
        # called after each block enters the state (snapshot_policy.py takes snapshots here)
        self.on_advanced: Callable[[Block], None] | None = None

    def _advance(self, block: Block) -> None:
        self.ledger.advance(block)
        if self.on_advanced is not None:
            self.on_advanced(block)

    def _rebuild_state(self) -> Ledger:
        """The account state at the tip, replayed from genesis (transactions only: the blocks
        were validated when stored), and checked against the tip's state root."""
        base = self.store.base_height()
        allocs = self.genesis.allocations
        ledger = self._snapshot_ledger(base) if base else genesis_ledger(allocs)
        for raw in self.store.iter_range(base + 1, self.height - base):
            ledger.advance(decode_block(raw))
        if ledger.root() != self.tip.header.state_root:
            raise StoreError(
                f"store {self.store.path}: the state replayed to block {self.height} does not "
                "match its header's state root — the store is damaged; use another --data-dir"
            )
        return ledger

    def _snapshot_ledger(self, base: int) -> Ledger:
        """The state at a snapshot base: the snapshot we restored (kept beside the store),
        anchored again by the stored block and every chunk checked."""
        snaps = SnapshotStore(snapshots_beside(self.store.path))
        manifest, block = snaps.manifest(base), self.store.block_at(base)
        try:
            if manifest is None or block is None:
                raise BadSnapshot(f"no snapshot or block at the base {base}")
            check_manifest(manifest, block.header, self.genesis.network_id)
            return snaps.load(manifest)
        except BadSnapshot as e:
            raise StoreError(
                f"store {self.store.path} starts from a snapshot at {base} that cannot be "
                f"loaded ({e.detail}); use another --data-dir"
            ) from e

    def install_snapshot(self, block: Block, ledger: Ledger) -> None:
        """Continue the chain from a restored snapshot: ``block`` (its hash matched a
        verified header) becomes the stored base and tip, ``ledger`` the state."""
        if ledger.root() != block.header.state_root:
            raise StoreError(f"restored state does not match block {block.height}'s state root")
        self.store.install_base(block)
        self.ledger = ledger
        self.tip = block
        self.height = block.height
        self.orphans.prune_below(self.height)

    @property
    def tip_hash(self) -> bytes:
        return self.tip.hash

    def seed_at(self, height: int) -> bytes | None:
        """The epoch seed a stored block contributes (model.entropy_of), cached by hash."""
        h = self.store.hash_at(height)
        if h is None:
            return None
        got = self._seeds.get((height, h))
        if got is None:
            block = self.store.block_at(height)
            assert block is not None
            got = entropy_of(block)
            self._seeds[(height, h)] = got
            while len(self._seeds) > 64:
                self._seeds.popitem(last=False)
        return got

    def seed_hash(self, height: int) -> bytes:
        seed = self.seed_at(epoch_seed_height(height, self.params.epoch_length))
        assert seed is not None, "seed block is below the tip, so it is stored"
        return seed

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
            tip_seed=entropy_of(self.tip),
            entropy=self.reveals,
            state=self.ledger,
        )

    def view_on(
        self,
        parent: Block,
        seed_hash: Callable[[int], bytes],
        has_tx: Callable[[bytes], bool],
        state: StateReader,
    ) -> ChainView:
        """A view for validating a block on `parent`, a block that need not be the stored tip
        (a fork branch, a buffered sync segment): only its own ancestry is known to it."""
        return ChainView(
            network_id=self.genesis.network_id,
            tip_height=parent.height,
            tip_hash=parent.hash,
            tip_timestamp_ms=parent.header.timestamp_ms,
            validators=self.genesis.validators,
            seed_hash=seed_hash,
            has_block=parent.hash.__eq__,
            has_tx=has_tx,
            tip_seed=entropy_of(parent),
            entropy=self.reveals,
            state=state,
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

    def fork_point(self, headers: list[BlockHeader]) -> int | None:
        """Highest height at which a peer's headers (ascending, contiguous) agree with our
        chain, or None if they agree nowhere in the window."""
        best = None
        for hdr in headers:
            if hdr.height <= self.height and self.store.hash_at(hdr.height) == hdr.compute_hash():
                best = hdr.height
        return best

    def reorg(self, branch: list[Block], max_depth: int) -> ReorgResult:
        """Fork choice: switch to ``branch`` if it is longer than our chain above the block it
        attaches to, no deeper than ``max_depth``, and every block in it is valid on top of its
        predecessor. The switch is one SQLite transaction."""
        res = ReorgResult()
        while branch and self.store.hash_at(branch[0].height) == branch[0].hash:
            branch = branch[1:]  # blocks we already share
        if not branch:
            return res
        fork = branch[0].height - 1
        if self.store.hash_at(fork) != branch[0].header.prev_hash:
            res.error = Orphan(
                f"branch starting at {branch[0].height} does not attach to our chain"
            )
            return res
        res.depth = self.height - fork
        if res.depth > max_depth:
            res.error = ReorgTooDeep(
                f"fork at {fork} is {res.depth} blocks deep, limit {max_depth}"
            )
            return res
        if fork + len(branch) <= self.height:
            return res  # not longer: keep ours (first seen wins ties)
        base = self.store.block_at(fork)
        assert base is not None
        hashes: dict[int, bytes] = {}
        txids: set[bytes] = set()

        def seed(h: int) -> bytes:
            sh = epoch_seed_height(h, self.params.epoch_length)
            got = hashes.get(sh) if sh > fork else self.seed_at(sh)
            assert got is not None
            return got

        def has_tx(t: bytes) -> bool:
            height = self.store.tx_height(t)
            return t in txids or (height is not None and height <= fork)

        at_fork = self.ledger.rewound(fork, self.height)
        if at_fork is None:
            res.error = ReorgTooDeep(f"no state undo records down to the fork at {fork}")
            return res
        state: StateReader = at_fork
        parent = base
        for b in branch:
            view = self.view_on(parent, seed, has_tx, state)
            try:
                state = check_block(b, view, self.params, self.clock_ms()) or state
            except ValidationError as e:
                res.error = e
                return res
            hashes[b.height] = entropy_of(b)  # seeds by height, as seed_at gives them
            txids.update(t.txid() for t in b.txs)
            parent = b
        res.dropped = self.store.replace_above(fork, branch)
        self.ledger.rewind(fork)
        for b in branch:
            self._advance(b)
        res.adopted = branch
        self.tip = branch[-1]
        self.height = self.tip.height
        self.orphans.prune_below(self.height)
        return res

    def append_verified(self, blocks: list[Block]) -> None:
        """Commit a segment the caller verified block by block against this tip (parallel
        sync), in one store transaction."""
        self.store.commit_blocks(blocks)
        for b in blocks:
            self._advance(b)
        if blocks:
            self.tip = blocks[-1]
            self.height = self.tip.height
            self.orphans.prune_below(self.height)

    def _commit(self, block: Block) -> None:
        self.store.commit_block(block)
        self._advance(block)
        self.tip = block
        self.height = block.height
