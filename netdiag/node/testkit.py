"""The node's declared testkit: the one way tools and tests build chains and time the node's
validation path in process.

DESIGN.md: tools talk to the node only through its wire protocol, REST API, CLI and process
boundary — this module is the one named exception. `netdiag bench sync` seeds its servers'
stores with a chain built here and measures the joiner's verify ceiling; `netdiag bench
validate` times the validation paths below; the node's tests build their chains here too.
Nothing else outside netdiag/node may import node internals.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from netdiag.node.chain import Chain, now_ms
from netdiag.node.crypto import Identity, lab_identity, preverified
from netdiag.node.genesis import ChainParams, GenesisSpec, lab_genesis, write_lab
from netdiag.node.model import Block, Tx, decode_block, decode_tx, make_block, make_tx
from netdiag.node.runtime import LoopScheduler
from netdiag.node.schedule import epoch_seed_height, producer_for
from netdiag.node.segment import verify_segment
from netdiag.node.sigpool import (
    PIPELINED_CHUNK,
    SigCheck,
    SigPool,
    pack,
    sig_checks,
    verify_chunk,
    verify_packed,
)
from netdiag.node.snapshot import SnapshotStore, build, snapshots_beside
from netdiag.node.snapshot_policy import replay_state
from netdiag.node.state import Overlay, StateReader, execute, genesis_ledger, materialize
from netdiag.node.store import Store
from netdiag.node.txbatch import TxBatcher
from netdiag.node.validation import ChainView, check_block, check_tx

__all__ = [
    "GenesisSpec",
    "Identity",
    "SigPool",
    "Workload",
    "build_chain",
    "funding_txs",
    "lab_identity",
    "past_genesis",
    "seed_snapshot",
    "seed_store",
    "verify_ceiling",
]


def build_chain(
    spec: GenesisSpec,
    keys: list[Identity],
    n: int,
    *,
    parent: Block | None = None,
    seed_at: Callable[[int], bytes | None] | None = None,
    round_: int = 0,
    txs: Callable[[int], list[Tx]] | None = None,
    state: StateReader | None = None,
) -> list[Block]:
    """``n`` valid blocks on top of ``parent`` (default: genesis), each produced by the
    producer scheduled for ``round_`` and stamped ``round_ + 1`` slots after its parent.

    ``seed_at(height)`` gives the hash of a block below ``parent`` that an epoch seed needs
    (a branch off an existing chain); ``txs(height)`` the transactions of each block (each
    must apply: state.execute); ``state`` the account state at ``parent`` (default: the
    genesis allocations, for a chain from genesis)."""
    by_id = {k.node_id: k for k in keys}
    if state is None and parent is not None and parent.height != 0:
        raise ValueError("pass the state at parent for a chain that does not start at genesis")
    ledger = materialize(state) if state is not None else genesis_ledger(spec.allocations)
    parent = parent or spec.block()
    start = parent.header.height
    hashes = {start: parent.hash}
    out: list[Block] = []
    for h in range(start + 1, start + n + 1):
        sh = epoch_seed_height(h, spec.params.epoch_length)
        seed = hashes.get(sh) if sh >= start else (seed_at(sh) if seed_at else None)
        if seed is None:
            raise ValueError(f"no hash for the epoch seed at height {sh}: pass seed_at")
        key = by_id[producer_for(spec.validators, seed, h, round_)]
        ts = parent.header.timestamp_ms + spec.params.slot_ms * (round_ + 1)
        block_txs = txs(h) if txs else []
        ov = Overlay(ledger)
        for tx in block_txs:
            execute(tx, ov)
        root = ov.root()
        b = make_block(key, spec.network_id, h, parent.hash, ts, block_txs, state_root=root)
        ledger.advance(b)
        hashes[h] = b.hash
        out.append(b)
        parent = b
    return out


def past_genesis(
    n_blocks: int,
    seed: str,
    network_id: str = "nd-test",
    validators: int = 3,
    slot_ms: int = 10,
    epoch_length: int = 100,
    out: Path | None = None,
    allocations: list[tuple[bytes, int]] | None = None,
) -> tuple[GenesisSpec, list[Identity]]:
    """A lab genesis far enough in the past that ``n_blocks`` one-slot blocks end before now
    (so a node accepts all of them); written to ``out`` (genesis.json + keys) when given."""
    ts = int(time.time() * 1000) - (n_blocks + 1000) * slot_ms
    spec, keys = lab_genesis(
        validators,
        seed,
        network_id,
        ts,
        ChainParams(epoch_length=epoch_length, slot_ms=slot_ms),
        allocations=allocations,
    )
    if out is not None:
        write_lab(out, spec, keys)
    return spec, keys


def seed_store(data_dir: Path, spec: GenesisSpec, blocks: list[Block]) -> Path:
    """Write genesis + ``blocks`` into a node's store in one transaction; the store's path."""
    path = data_dir / "chain.sqlite"
    store = Store(path)
    try:
        store.init_genesis(spec.block())
        store.commit_blocks(blocks)
    finally:
        store.close()
    return path


def funding_txs(
    payer: Identity, accounts: int, per_block: int, ts_ms: int
) -> Callable[[int], list[Tx]]:
    """``txs(height)`` for build_chain: transfers from ``payer`` (funded at genesis) that
    create ``accounts`` new accounts, ``per_block`` per block from block 1 on."""

    def txs(height: int) -> list[Tx]:
        first = (height - 1) * per_block
        return [
            make_tx(payer, i, b"", ts_ms, hashlib.sha256(b"acct:%d" % i).digest(), 1)
            for i in range(first, min(first + per_block, accounts))
        ]

    return txs


def seed_snapshot(data_dir: Path, spec: GenesisSpec, height: int, chunk_bytes: int) -> int:
    """Write the snapshot after stored block ``height`` into a seeded node's data dir (as the
    node itself would have at that block); returns the state's bytes."""
    store = Store(data_dir / "chain.sqlite")
    try:
        ledger, block = replay_state(store, spec, height)
    finally:
        store.close()
    manifest, chunks = build(ledger, block, spec.network_id, chunk_bytes)
    SnapshotStore(snapshots_beside(data_dir / "chain.sqlite")).save(manifest, chunks)
    return sum(len(c) for c in chunks)


def verify_ceiling(spec: GenesisSpec, blocks: list[Block], workdir: Path, step: int = 128) -> float:
    """Blocks/s of a joiner's verify+commit path in process, no network, in process CPU time
    (other load on the machine does not lower it): the single-core ceiling a sync from any
    number of peers can approach (fsync waits are not counted)."""
    where = Path(tempfile.mkdtemp(prefix="ceiling-", dir=workdir))
    chain = Chain(Store(where / "chain.sqlite"), spec)
    try:
        t0 = time.process_time()
        for i in range(0, len(blocks), step):
            res = verify_segment(chain, blocks[i : i + step], now_ms())
            if res.error is not None:
                raise RuntimeError(f"testkit chain invalid: {res.error}")
            chain.append_verified(res.verified)
        took = time.process_time() - t0
    finally:
        chain.store.close()
        shutil.rmtree(where, ignore_errors=True)
    return len(blocks) / took


# -- the validation paths, timed (netdiag bench validate) ---------------------------------------

T0 = 1_700_000_000_000
SLOT = 1000


@dataclass(frozen=True)
class Workload:
    blocks: list[bytes]  # encoded, a valid chain on top of genesis
    txs: list[bytes]  # encoded, all of them (the same ones the blocks carry)
    genesis_hash: bytes
    params: ChainParams
    validators: list[bytes]
    network_id: str


def build_workload(n_blocks: int, txs_per_block: int, validators: int = 4) -> Workload:
    params = ChainParams(
        epoch_length=100,
        slot_ms=SLOT,
        max_block_txs=max(2000, txs_per_block),
        max_block_bytes=64 << 20,
    )
    spec, keys = lab_genesis(validators, "bench", "bench", T0, params)
    users = keys  # any keys sign transactions

    def batch(h: int) -> list[Tx]:
        return [
            make_tx(users[i % len(users)], h * 1_000_000 + i, b"p" * 64, T0)
            for i in range(txs_per_block)
        ]

    chain = build_chain(spec, keys, n_blocks, txs=batch)
    blocks = [b.encode() for b in chain]
    txs = [t.encode() for b in chain for t in b.txs]
    return Workload(blocks, txs, spec.block().hash, params, spec.validators, spec.network_id)


def raw_verify_rate(w: Workload) -> float:
    """Ed25519 verifies/s with keys pre-parsed and messages pre-built: the crypto ceiling."""
    items = []
    for raw in w.txs:
        t = decode_tx(raw)
        items.append((Ed25519PublicKey.from_public_bytes(t.sender), t.signature, t.signing_bytes()))
    t0 = time.process_time()
    for key, sig, msg in items:
        key.verify(sig, msg)
    return len(items) / (time.process_time() - t0)


def tx_validate_rate(
    w: Workload, timer: Callable[[], float] = time.process_time, repeat: int = 1
) -> float:
    """Transactions/s through the node's path: decode from wire bytes, check_tx (size, format,
    key parse, signature), one at a time on this process's core."""
    t0 = timer()
    for _ in range(repeat):
        for raw in w.txs:
            check_tx(decode_tx(raw), w.params, len(raw))
    return repeat * len(w.txs) / (timer() - t0)


def tx_batch_wall_rate(
    w: Workload, pool: SigPool, repeat: int = 1, burst: int = 64, deadline_s: float = 600.0
) -> float:
    """Transactions/s in wall time through the node's batched path (txbatch.TxBatcher on an
    event loop, signatures at ``pool``'s workers): the workload's transactions arrive as a
    flood, ``burst`` per loop turn (the frames of one socket read), each decoded and offered
    as gossip ingest does, then checked (check_tx) in arrival order when its batch is back;
    an offer the full batch refuses is retried next turn (backpressure). A transaction whose
    check raises, or a run past ``deadline_s``, raises RuntimeError instead of waiting on."""
    raws = repeat * w.txs
    applied = 0
    errors: list[Exception] = []

    def applier(tx: Tx, n: int) -> Callable[[], None]:
        def apply() -> None:
            nonlocal applied
            try:
                check_tx(tx, w.params, n)
            finally:
                applied += 1

        return apply

    async def flood() -> None:
        b = TxBatcher(pool.prove_later, LoopScheduler(), pool.min_batch, on_error=errors.append)
        end = time.perf_counter() + deadline_s
        i = 0
        while i < len(raws):
            for raw in raws[i : i + burst]:
                tx = decode_tx(raw)
                if not b.offer(
                    (tx.sender, tx.signature, tx.signing_bytes()), len(raw), applier(tx, len(raw))
                ):
                    break
                i += 1
            else:
                await asyncio.sleep(0)  # the next read
                continue
            await asyncio.sleep(0.001)  # full: the sender waits (TCP's flow control)
            overdue(end, i)
        while applied < len(raws):
            await asyncio.sleep(0.001)
            overdue(end, applied)

    def overdue(end: float, done: int) -> None:
        if time.perf_counter() > end:
            raise RuntimeError(
                f"tx batch bench: {done} of {len(raws)} txs after {deadline_s:g} s (deadline)"
            )

    t0 = time.perf_counter()
    asyncio.run(flood())
    took = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"tx batch bench: {len(errors)} txs failed their check: {errors[0]!r}")
    return len(raws) / took


def raw_verify_wall_rate(w: Workload, pool: SigPool | None = None, repeat: int = 1) -> float:
    """Ed25519 verifies/s in wall time from the wire's bytes (key parsing included): on this
    process's core, or with ``pool`` on all of its workers (as sync and gossip use it); the
    workload's signatures ``repeat`` times over (a call long enough to count its CPU)."""
    items = repeat * [(t.sender, t.signature, t.signing_bytes()) for t in map(decode_tx, w.txs)]
    t0 = time.perf_counter()
    ok = pool.verify_many(items) if pool is not None else verify_chunk(items)
    took = time.perf_counter() - t0
    if not all(ok):
        raise RuntimeError("testkit workload has a bad signature")
    return len(items) / took


def raw_fast_wall_rate(w: Workload, repeat: int = 1) -> float:
    """``raw_verify_wall_rate`` on this process's core through the pool's own worker path
    (``sigpool.verify_packed``: libsodium when the system has it): one core of what the
    workers run, so a pool's speed-up over it is the cores', not the library's."""
    items = repeat * [(t.sender, t.signature, t.signing_bytes()) for t in map(decode_tx, w.txs)]
    buf = pack(items)
    t0 = time.perf_counter()
    ok = verify_packed(buf)
    took = time.perf_counter() - t0
    if len(ok) != len(items) or not all(ok):
        raise RuntimeError("testkit workload has a bad signature")
    return len(items) / took


def block_validate_rate(
    w: Workload,
    pool: SigPool | None = None,
    timer: Callable[[], float] = time.process_time,
    pipelined: bool = False,
) -> float:
    """Blocks/s through decode + check_block (every rule, every tx signature), state in memory;
    with ``pool`` each block's signatures are first verified as one batch on every core (the
    gossip path; time it in wall time: the workers' CPU is not this process's). ``pipelined``
    (blocks arriving in a run, as in sync): block N+1 is decoded and its batch sent to the
    workers before block N's rules run, so those rules overlap its signature checks."""
    hashes: dict[int, bytes] = {0: w.genesis_hash}
    seen_tx: set[bytes] = set()
    known: set[bytes] = {w.genesis_hash}
    tip_ts = T0
    t0 = timer()
    nxt: tuple[Block, Callable[[], list[SigCheck]]] | None = None
    for h, raw in enumerate(w.blocks, start=1):
        if nxt is None:
            b = decode_block(raw)
            proving = pool.prove_soon(sig_checks([b])) if pool is not None else list
        else:
            b, proving = nxt
        if pipelined and pool is not None and h < len(w.blocks):
            after = decode_block(w.blocks[h])
            nxt = after, pool.prove_soon(sig_checks([after]), PIPELINED_CHUNK)
        ok = proving()
        view = ChainView(
            w.network_id,
            h - 1,
            hashes[h - 1],
            tip_ts,
            w.validators,
            lambda x: hashes[epoch_seed_height(x, w.params.epoch_length)],
            known.__contains__,
            seen_tx.__contains__,
        )
        with preverified(ok):
            check_block(b, view, w.params, tip_ts + 10 * SLOT, len(raw))
        hashes[h] = b.hash
        known.add(b.hash)
        seen_tx.update(t.txid() for t in b.txs)
        tip_ts = b.header.timestamp_ms
    return len(w.blocks) / (timer() - t0)


def block_commit_rate(w: Workload, genesis_validators: int) -> float:
    """Blocks/s through Chain.submit: validation plus the atomic SQLite (WAL, fsync) commit."""
    spec, _ = lab_genesis(genesis_validators, "bench", "bench", T0, w.params)
    with tempfile.TemporaryDirectory(prefix="netdiag-bench-") as d:
        decoded: list[Block] = [decode_block(raw) for raw in w.blocks]
        chain = Chain(Store(Path(d) / "chain.sqlite"), spec, clock_ms=lambda: 2**62)
        t0 = time.perf_counter()
        for b in decoded:
            res = chain.submit(b)
            if res.error is not None:
                raise RuntimeError(f"benchmark chain invalid: {res.error}")
        dt = time.perf_counter() - t0
        chain.store.close()
    return len(decoded) / dt
