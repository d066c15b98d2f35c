"""Sequential verification of a downloaded segment against the stored anchor (the tip).

Parallel sync downloads blocks out of order into a buffer; nothing reaches the store until it
is verified here, in height order, as the successor of the block before it: link (height and
prev_hash), hash, signature, producer schedule (the entropy may come from the segment itself
once it crosses an epoch boundary), timestamps, merkle root, transactions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from netdiag.node.chain import Chain
from netdiag.node.crypto import preverified
from netdiag.node.errors import ValidationError
from netdiag.node.genesis import GenesisSpec
from netdiag.node.model import Block, entropy_of
from netdiag.node.schedule import epoch_seed_height
from netdiag.node.sigpool import SigPool, sig_checks
from netdiag.node.state import StateReader
from netdiag.node.validation import BadPrevHash, check_block, check_header


def short_hex(b: bytes) -> str:
    return "0x" + b[:6].hex() + "…"


class ChainBreak(BadPrevHash):
    """The block does not link to the verified block below it."""

    def __init__(self, height: int, expected: bytes, got: bytes) -> None:
        super().__init__(
            f"chain break at {height}: expected prev_hash {short_hex(expected)}, "
            f"got {short_hex(got)}"
        )
        self.height = height
        self.expected = expected
        self.got = got


@dataclass
class SegmentResult:
    verified: list[Block]  # the valid prefix, ready to commit
    error: ValidationError | None = None  # why the block after the prefix failed
    fork_at_anchor: bool = False  # first block is authentic but builds on another chain


def verify_segment(
    chain: Chain,
    blocks: list[Block],
    now_ms: int,
    sigs: SigPool | None = None,
    deadline: float | None = None,
) -> SegmentResult:
    """Verify ``blocks`` (ascending, meant to start at tip + 1) in order; stop at the first
    failure. Never touches the store. With ``sigs``, the segment's signatures are verified
    first as one batch on every core; the rules then run in order as always. With
    ``deadline`` (``time.perf_counter()``), stop after the first block verified past it: the
    prefix is returned without an error (the caller's event-loop turn stays bounded)."""
    with preverified(sigs.prove(sig_checks(blocks)) if sigs is not None else ()):
        return _verify_in_order(chain, blocks, now_ms, deadline)


def _verify_in_order(
    chain: Chain, blocks: list[Block], now_ms: int, deadline: float | None = None
) -> SegmentResult:
    res = SegmentResult([])
    parent = chain.tip
    state: StateReader = chain.ledger
    seeds: dict[int, bytes] = {}
    txids: set[bytes] = set()
    L = chain.params.epoch_length

    def seed(h: int) -> bytes:
        sh = epoch_seed_height(h, L)
        got = seeds.get(sh)
        if got is None:
            got = chain.seed_at(sh)
            assert got is not None, "seed at or below the verified prefix"
            seeds[sh] = got
        return got

    def has_tx(t: bytes) -> bool:
        return t in txids or chain.store.has_tx(t)

    for b in blocks:
        if b.height != parent.height + 1 or b.header.prev_hash != parent.hash:
            if b.height == chain.height + 1 and b.height == parent.height + 1:
                # At the anchor: an authentic block on another branch is a fork (reorg
                # territory), not a forgery — only a bad signature makes it one.
                try:
                    check_header(b.header, b.hash, b.signature)
                    res.fork_at_anchor = b.header.producer in chain.genesis.validators
                except ValidationError:
                    res.fork_at_anchor = False  # unsigned junk: a forged break, reported as such
            res.error = ChainBreak(parent.height + 1, parent.hash, b.header.prev_hash)
            return res
        view = chain.view_on(parent, seed, has_tx, state)
        try:
            state = check_block(b, view, chain.params, now_ms) or state
        except ValidationError as e:
            res.error = e
            return res
        seeds[b.height] = entropy_of(b)  # a boundary block seeds the next epoch
        txids.update(t.txid() for t in b.txs)
        res.verified.append(b)
        parent = b
        if deadline is not None and time.perf_counter() >= deadline:
            break
    return res


def authentic(block: Block, genesis: GenesisSpec) -> bool:
    """A block of this network, signed by a genesis validator, whose hash and signature
    verify — proof that a peer's height claim is real (not that the block is valid)."""
    if block.header.network_id != genesis.network_id:
        return False
    if block.header.producer not in genesis.validators:
        return False
    try:
        check_header(block.header, block.hash, block.signature)
    except ValidationError:
        return False
    return True
