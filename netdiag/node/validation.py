"""Validation rules: one error class per rule, so metrics and logs name exactly what failed.

Stateless checks live in ``check_tx`` and ``check_block``; the caller supplies the chain facts
they need (tip, entropy, already-included tx ids) so the rules are testable without a store.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from netdiag.node import crypto
from netdiag.node.entropy import RevealCheck, next_mix
from netdiag.node.errors import ValidationError
from netdiag.node.genesis import ChainParams
from netdiag.node.model import (
    BLOCK_DOMAIN,
    BLOCK_VERSION,
    HASH_LEN,
    Block,
    BlockHeader,
    Tx,
    merkle_root,
)
from netdiag.node.schedule import producer_for, round_for
from netdiag.node.state import Overlay, StateReader, execute_block


def _short(h: bytes) -> str:
    return "0x" + h[:6].hex() + "…"


class Orphan(ValidationError):
    """Predecessor not stored: hold in the orphan pool and ask for the parent, never store."""

    reason = "orphan"


class BadPrevHash(ValidationError):
    reason = "prev_hash"


class BadHeight(ValidationError):
    reason = "height"


class BadHash(ValidationError):
    reason = "hash"


class BadSignature(ValidationError):
    reason = "signature"


class WrongProducer(ValidationError):
    reason = "producer"


class BadMerkleRoot(ValidationError):
    reason = "merkle_root"


class BadTxSignature(ValidationError):
    reason = "tx_signature"


class BadTimestamp(ValidationError):
    reason = "timestamp"


class EarlyBlock(BadTimestamp):
    """Stamped for a round that has not begun on our clock (beyond the tolerance)."""

    reason = "early"


CLOCK_TOLERANCE_DIVISOR = 10  # a block may be stamped at most slot/10 ahead of our clock


def clock_tolerance_ms(params: ChainParams) -> int:
    """How far ahead of the local clock a block's timestamp may be: a tenth of a slot (clock
    skew between honest hosts), never more than the genesis ``max_future_ms``."""
    return min(params.max_future_ms, params.slot_ms // CLOCK_TOLERANCE_DIVISOR)


class TooLarge(ValidationError):
    reason = "size"


class DuplicateTx(ValidationError):
    reason = "duplicate_tx"


class BadFormat(ValidationError):
    reason = "format"


class WrongNetwork(ValidationError):
    reason = "network"


class BadEntropy(ValidationError):
    """Missing or wrong reveal, or a mix that does not fold it in (entropy.py)."""

    reason = "entropy"


def check_tx(tx: Tx, params: ChainParams, encoded_len: int | None = None) -> None:
    size = len(tx.encode()) if encoded_len is None else encoded_len
    if size > params.max_tx_bytes:
        raise TooLarge(f"tx is {size} bytes, limit {params.max_tx_bytes}")
    if (
        len(tx.sender) != crypto.PUBKEY_LEN
        or not 0 <= tx.nonce < 2**63 - 1
        or not 0 <= tx.timestamp_ms < 2**63
        or len(tx.to) not in (0, crypto.PUBKEY_LEN)
        or not 0 <= tx.amount < 2**63
        or (not tx.to and tx.amount)
    ):
        raise BadFormat(
            "tx sender must be a 32-byte key, nonce and timestamp non-negative, to empty or a "
            "32-byte key, amount non-negative (and 0 without to)"
        )
    if not crypto.verify(tx.sender, tx.signature, tx.signing_bytes()):
        raise BadTxSignature(
            f"tx {_short(tx.txid())} signature does not verify for sender {_short(tx.sender)}"
        )


@dataclass(frozen=True)
class ChainView:
    """What block validation needs to know about the chain it extends."""

    network_id: str
    tip_height: int
    tip_hash: bytes
    tip_timestamp_ms: int
    validators: list[bytes]
    seed_hash: Callable[[int], bytes]  # height -> entropy hash for that height's draw
    has_block: Callable[[bytes], bool]  # is this hash stored (to tell orphans from forks)
    has_tx: Callable[[bytes], bool]  # is this txid already in the chain
    tip_seed: bytes = b""  # model.entropy_of(tip): what the next block's mix folds from
    entropy: RevealCheck | None = None  # None: a network without entropy anchors
    state: StateReader | None = None  # the state at the tip; None: state not checked (benches)


def check_entropy(hdr: BlockHeader, view: ChainView) -> None:
    """The producer's hash-chain reveal for this height, and the mix that folds it in."""
    if view.entropy is None:
        if hdr.reveal or hdr.mix:
            raise BadEntropy(f"block {hdr.height} carries entropy on a network without anchors")
        return
    if not view.entropy.valid(hdr.producer, hdr.height, hdr.reveal):
        raise BadEntropy(
            f"block {hdr.height} reveal {_short(hdr.reveal)} is not producer "
            f"{_short(hdr.producer)}'s entropy for height {hdr.height} (withheld or forged)"
        )
    if hdr.mix != next_mix(view.tip_seed, hdr.reveal):
        raise BadEntropy(f"block {hdr.height} mix does not fold its reveal into its parent's")


def check_header(header: BlockHeader, claimed_hash: bytes, signature: bytes) -> bytes:
    """Hash and signature — cheap enough to run before anything touches state."""
    if header.version != BLOCK_VERSION:
        raise BadFormat(f"unknown block version {header.version}")
    if (
        len(header.prev_hash) != HASH_LEN
        or len(header.tx_root) != HASH_LEN
        or len(header.state_root) != HASH_LEN
    ):
        raise BadFormat("prev_hash, tx_root and state_root must be 32 bytes")
    h = header.compute_hash()
    if h != claimed_hash:
        raise BadHash(
            f"block {header.height} claims hash {_short(claimed_hash)} but its header "
            f"hashes to {_short(h)}"
        )
    if not crypto.verify(header.producer, signature, BLOCK_DOMAIN + h):
        raise BadSignature(
            f"block {header.height} {_short(h)} signature does not verify for "
            f"producer {_short(header.producer)}"
        )
    return h


def check_block(
    block: Block, view: ChainView, params: ChainParams, now_ms: int, encoded_len: int | None = None
) -> Overlay | None:
    """Raise the ValidationError of the first rule ``block`` breaks as the successor of the tip;
    return the state the block leaves (None when the view carries no state)."""
    txids = check_block_cheap(block, view, params, now_ms, encoded_len)
    return check_block_body(block, view, params, txids)


def check_block_cheap(
    block: Block, view: ChainView, params: ChainParams, now_ms: int, encoded_len: int | None = None
) -> list[bytes]:
    """The rules that cost no transaction signature: size, network, hash and producer
    signature, linkage, height, slot and schedule, and the Merkle root (so the transactions
    are exactly those the producer signed for). A block that passes may be forwarded before
    ``check_block_body``; anything that body check finds is then the producer's doing.
    Returns the txids."""
    hdr = block.header
    size = len(block.encode()) if encoded_len is None else encoded_len
    if size > params.max_block_bytes:
        raise TooLarge(f"block {hdr.height} is {size} bytes, limit {params.max_block_bytes}")
    if len(block.txs) > params.max_block_txs or hdr.tx_count != len(block.txs):
        raise TooLarge(
            f"block {hdr.height} carries {len(block.txs)} txs (header says "
            f"{hdr.tx_count}), limit {params.max_block_txs}"
        )
    h = check_signed_header(hdr, block.hash, block.signature, view, params, now_ms)
    txids = [t.txid() for t in block.txs]
    root = merkle_root(txids)
    if root != hdr.tx_root:
        raise BadMerkleRoot(
            f"block {hdr.height} {_short(h)} tx_root {_short(hdr.tx_root)} "
            f"does not match its transactions ({_short(root)})"
        )
    return txids


def check_block_body(
    block: Block, view: ChainView, params: ChainParams, txids: list[bytes]
) -> Overlay | None:
    """The rest of ``check_block`` once ``check_block_cheap`` passed (``txids``, its result):
    entropy reveal, duplicates, every transaction, and the state the block leaves."""
    hdr = block.header
    # after the schedule: only the round's producer can make us hash its chain (a check costs
    # the heights since its last verified reveal, or up to the height from the anchor once)
    check_entropy(hdr, view)
    if len(set(txids)) != len(txids):
        raise DuplicateTx(f"block {hdr.height} repeats a transaction")
    for tx, txid in zip(block.txs, txids, strict=True):
        if view.has_tx(txid):
            raise DuplicateTx(f"block {hdr.height} includes tx {_short(txid)} already in the chain")
        try:
            check_tx(tx, params)
        except BadTxSignature as e:
            raise BadTxSignature(f"block {hdr.height}: {e.detail}") from e
    # last: nonces, balances and the state root (state.py) — the only rule that needs state
    return None if view.state is None else execute_block(block, view.state)


def check_signed_header(
    hdr: BlockHeader,
    claimed_hash: bytes,
    signature: bytes,
    view: ChainView,
    params: ChainParams,
    now_ms: int,
) -> bytes:
    """The rules a header alone decides, in check_block's order: network, hash, signature,
    producer, linkage, height, timestamps, schedule (the caller adds ``check_entropy``).
    Returns the block hash. A joiner checks the header chain to a snapshot with these."""
    if hdr.network_id != view.network_id:
        raise WrongNetwork(f"block {hdr.height} is for network {hdr.network_id!r}")
    # Authenticity before anything is held: even an orphan must be hashed correctly and signed
    # by a genesis validator, so junk cannot fill the orphan pool.
    h = check_header(hdr, claimed_hash, signature)
    if hdr.producer not in view.validators:
        raise WrongProducer(
            f"block {hdr.height} producer {_short(hdr.producer)} is not a genesis validator"
        )
    # Linkage: never accept N without N-1, and tell "unknown parent" from "not our tip".
    if hdr.prev_hash != view.tip_hash:
        if hdr.height > view.tip_height and not view.has_block(hdr.prev_hash):
            raise Orphan(
                f"block {hdr.height} builds on {_short(hdr.prev_hash)}, which is not "
                f"stored (tip is {view.tip_height} {_short(view.tip_hash)})"
            )
        raise BadPrevHash(
            f"block {hdr.height} rejected: prev_hash {_short(hdr.prev_hash)} does "
            f"not match tip {view.tip_height} {_short(view.tip_hash)}"
        )
    if hdr.height != view.tip_height + 1:
        raise BadHeight(f"block claims height {hdr.height} on top of tip {view.tip_height}")
    if hdr.timestamp_ms < view.tip_timestamp_ms + params.slot_ms:
        raise BadTimestamp(
            f"block {hdr.height} timestamp {hdr.timestamp_ms} is less than one "
            f"slot ({params.slot_ms} ms) after its parent's {view.tip_timestamp_ms}"
        )
    tolerance = clock_tolerance_ms(params)
    if hdr.timestamp_ms > now_ms + tolerance:
        # Rotation by the local clock's slot: a block stamped for a round that has not begun
        # here is early, whoever signed it — never accepted for a future round.
        raise EarlyBlock(
            f"block {hdr.height} is stamped {hdr.timestamp_ms - now_ms} ms ahead of our clock "
            f"(round {round_for(view.tip_timestamp_ms, hdr.timestamp_ms, params.slot_ms)}, "
            f"current round {round_for(view.tip_timestamp_ms, now_ms, params.slot_ms)}; "
            f"tolerance {tolerance} ms)"
        )
    round_ = round_for(view.tip_timestamp_ms, hdr.timestamp_ms, params.slot_ms)
    expected = producer_for(view.validators, view.seed_hash(hdr.height), hdr.height, round_)
    if hdr.producer != expected:
        raise WrongProducer(
            f"block {hdr.height} round {round_} produced by "
            f"{_short(hdr.producer)}, scheduled producer is {_short(expected)}"
        )
    return h
