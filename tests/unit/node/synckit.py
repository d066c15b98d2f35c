"""Sync test helpers: a long valid chain built in process (no real-time production) and
written straight into several nodes' stores, plus misbehaving serving nodes."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import msgspec

from netdiag.node.crypto import Identity
from netdiag.node.daemon import Node
from netdiag.node.genesis import ChainParams, GenesisSpec, lab_genesis, write_lab
from netdiag.node.messages import GetBlocks, Message
from netdiag.node.model import Block, decode_block, make_block
from netdiag.node.schedule import epoch_seed_height, producer_for
from netdiag.node.store import Store
from netdiag.node.transport import Connection

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


def forge(b: Block) -> Block:
    """A forgery that still decodes: re-pointed at a made-up parent, re-hashed, and (no
    validator key at hand) signed with zeros."""
    prev = hashlib.sha256(b"forged" + b.hash).digest()
    hdr = msgspec.structs.replace(b.header, prev_hash=prev)
    return Block(hdr, hdr.compute_hash(), bytes(64), b.txs)


class ForgingNode(Node):
    """Serves a forged segment: every block from ``forge_from`` up is a forgery."""

    forge_from = 1337

    def _serve_range(self, start: int, count: int) -> list[bytes]:
        raws = super()._serve_range(start, count)
        if count == 1:
            return raws  # its tip claim is genuine; its segments are not
        return [
            forge(decode_block(r)).encode() if start + i >= self.forge_from else r
            for i, r in enumerate(raws)
        ]


class StallingNode(Node):
    """Answers status and single-block (tip) queries but silently sits on every range."""

    def _dispatch(self, conn: Connection, msg: Message, size: int) -> None:
        if isinstance(msg, GetBlocks) and msg.count > 1:
            return
        super()._dispatch(conn, msg, size)
