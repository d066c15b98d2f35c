"""Validation throughput of this node's code, measured against raw Ed25519 verification on the
same machine in the same run, so the figures are ratios that survive a change of hardware: how
much of the crypto ceiling the validation path reaches.

The machine is shared, so: rounds are interleaved (raw, tx, block, commit, raw, …), ratios are
taken within a round and the median over rounds is reported, and the CPU-bound paths are timed
in process CPU time (time spent descheduled by a noisy neighbour does not count). The commit
path is timed in wall time because its cost includes waiting for fsync.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from netdiag.node.chain import Chain
from netdiag.node.genesis import ChainParams, lab_genesis
from netdiag.node.model import Block, decode_block, decode_tx, make_block, make_tx
from netdiag.node.schedule import epoch_seed_height, producer_for
from netdiag.node.store import Store
from netdiag.node.validation import ChainView, check_block, check_tx

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
    by_id = {k.node_id: k for k in keys}
    users = keys  # any keys sign transactions
    parent = spec.block()
    hashes = {0: parent.hash}
    blocks: list[bytes] = []
    txs: list[bytes] = []
    for h in range(1, n_blocks + 1):
        batch = [
            make_tx(users[i % len(users)], h * 1_000_000 + i, b"p" * 64, T0)
            for i in range(txs_per_block)
        ]
        ts = parent.header.timestamp_ms + SLOT
        seed = hashes[epoch_seed_height(h, params.epoch_length)]
        prod = by_id[producer_for(spec.validators, seed, h, 0)]
        b = make_block(prod, spec.network_id, h, parent.hash, ts, batch)
        hashes[h] = b.hash
        blocks.append(b.encode())
        txs.extend(t.encode() for t in batch)
        parent = b
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


def tx_validate_rate(w: Workload) -> float:
    """Transactions/s through the node's path: decode from wire bytes, check_tx (size, format,
    key parse, signature)."""
    t0 = time.process_time()
    for raw in w.txs:
        check_tx(decode_tx(raw), w.params, len(raw))
    return len(w.txs) / (time.process_time() - t0)


def block_validate_rate(w: Workload) -> float:
    """Blocks/s through decode + check_block (every rule, every tx signature), state in memory."""
    hashes: dict[int, bytes] = {0: w.genesis_hash}
    seen_tx: set[bytes] = set()
    known: set[bytes] = {w.genesis_hash}
    tip_ts = T0
    t0 = time.process_time()
    for h, raw in enumerate(w.blocks, start=1):
        b = decode_block(raw)
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
        check_block(b, view, w.params, tip_ts + 10 * SLOT, len(raw))
        hashes[h] = b.hash
        known.add(b.hash)
        seen_tx.update(t.txid() for t in b.txs)
        tip_ts = b.header.timestamp_ms
    return len(w.blocks) / (time.process_time() - t0)


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


class Figures(msgspec.Struct):
    ed25519_verify_per_s: float
    tx_validate_per_s: float
    block_validate_per_s: float
    block_txs_validate_per_s: float
    block_commit_per_s: float
    block_commit_txs_per_s: float
    tx_vs_raw_ratio: float
    block_txs_vs_raw_ratio: float
    commit_txs_vs_raw_ratio: float


def run(
    n_blocks: int, txs_per_block: int, rounds: int, validators: int = 4
) -> tuple[Figures, list[dict[str, float]]]:
    w = build_workload(n_blocks, txs_per_block, validators)
    steps: dict[str, Callable[[], float]] = {
        "raw": lambda: raw_verify_rate(w),
        "tx": lambda: tx_validate_rate(w),
        "block": lambda: block_validate_rate(w),
        "commit": lambda: block_commit_rate(w, validators),
    }
    per_round: list[dict[str, float]] = []
    for _ in range(rounds):
        r = {k: f() for k, f in steps.items()}
        r["tx_vs_raw"] = r["tx"] / r["raw"]
        r["block_txs_vs_raw"] = r["block"] * txs_per_block / r["raw"]
        r["commit_txs_vs_raw"] = r["commit"] * txs_per_block / r["raw"]
        per_round.append(r)
    med = {k: statistics.median(r[k] for r in per_round) for k in per_round[0]}
    fig = Figures(
        ed25519_verify_per_s=med["raw"],
        tx_validate_per_s=med["tx"],
        block_validate_per_s=med["block"],
        block_txs_validate_per_s=med["block"] * txs_per_block,
        block_commit_per_s=med["commit"],
        block_commit_txs_per_s=med["commit"] * txs_per_block,
        tx_vs_raw_ratio=med["tx_vs_raw"],
        block_txs_vs_raw_ratio=med["block_txs_vs_raw"],
        commit_txs_vs_raw_ratio=med["commit_txs_vs_raw"],
    )
    return fig, per_round
