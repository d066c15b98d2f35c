"""Chain data model: transactions, block headers, blocks; canonical encodings and hashes.

Canonical encoding is msgpack of array-like structs (field order is the schema), so every
node computes the same bytes for the same header. Block hash = SHA-256(canonical header).
"""

from __future__ import annotations

import hashlib

import msgspec

from netdiag.node.crypto import Identity

HASH_LEN = 32
ZERO_HASH = bytes(HASH_LEN)
BLOCK_VERSION = 1

# Domain separation: a signature over one kind of object can never be replayed as another.
TX_DOMAIN = b"netdiag-node/tx/v2\x00"
BLOCK_DOMAIN = b"netdiag-node/block/v1\x00"

_enc = msgspec.msgpack.Encoder()


class Tx(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    sender: bytes  # Ed25519 public key
    nonce: int
    timestamp_ms: int
    payload: bytes
    signature: bytes
    # a transfer (state.py): ``amount`` from sender to ``to``; no ``to`` = data only, amount 0
    to: bytes = b""
    amount: int = 0

    def signing_bytes(self) -> bytes:
        return TX_DOMAIN + _enc.encode(
            (self.sender, self.nonce, self.timestamp_ms, self.payload, self.to, self.amount)
        )

    def encode(self) -> bytes:
        return _enc.encode(self)

    def txid(self) -> bytes:
        return hashlib.sha256(self.encode()).digest()


class BlockHeader(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    version: int
    network_id: str
    height: int
    prev_hash: bytes
    timestamp_ms: int
    producer: bytes
    tx_root: bytes
    tx_count: int
    # epoch entropy (entropy.py): the producer's hash-chain reveal for this height and the
    # running mix H(domain || seed(parent) || reveal); both empty on networks without anchors
    reveal: bytes = b""
    mix: bytes = b""
    # the account state after this block's transactions (state.py: Merkle over sorted keys)
    state_root: bytes = b""

    def encode(self) -> bytes:
        return _enc.encode(self)

    def compute_hash(self) -> bytes:
        return hashlib.sha256(self.encode()).digest()


class Block(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    header: BlockHeader
    hash: bytes  # claimed; validation recomputes it
    signature: bytes  # producer's signature over BLOCK_DOMAIN + hash
    txs: list[Tx]

    @property
    def height(self) -> int:
        return self.header.height

    def encode(self) -> bytes:
        return _enc.encode(self)


def entropy_of(block: Block) -> bytes:
    """What this block contributes as an epoch seed: its mix, or its hash where there is none
    (block 0, and every block of a network without entropy anchors)."""
    return block.header.mix or block.hash


def decode_block(data: bytes) -> Block:
    return msgspec.msgpack.decode(data, type=Block)


class _HeaderOnly(msgspec.Struct, array_like=True, frozen=True):
    """A block read for its header alone: the rest (hash, signature, txs) is skipped."""

    header: msgspec.Raw


_header_only = msgspec.msgpack.Decoder(_HeaderOnly)


def header_bytes(block_data: bytes) -> bytes:
    """The encoded header of an encoded block, without decoding its transactions (the block
    was encoded canonically, so this is ``decode_block(block_data).header.encode()``)."""
    return bytes(_header_only.decode(block_data).header)


def decode_single_block(blocks: list[bytes]) -> Block | None:
    """The one block of a single-block answer (a tip or seed check); None when the answer
    holds no block, several, or one that does not decode."""
    if len(blocks) != 1:
        return None
    try:
        return decode_block(blocks[0])
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def decode_tx(data: bytes) -> Tx:
    return msgspec.msgpack.decode(data, type=Tx)


def merkle_root(leaves: list[bytes]) -> bytes:
    """RFC 6962-style tree: leaves and inner nodes are domain-separated and an odd node is
    promoted, not duplicated, so two different transaction lists never share a root."""
    return merkle_of_hashes([hashlib.sha256(b"\x00" + leaf).digest() for leaf in leaves])


def merkle_of_hashes(level: list[bytes]) -> bytes:
    """The tree above already-hashed leaves (inner node = SHA-256(0x01 || l || r), an odd
    node promoted); SHA-256("") for none."""
    if not level:
        return hashlib.sha256(b"").digest()
    while len(level) > 1:
        nxt = [
            hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest()
            for i in range(0, len(level) - 1, 2)
        ]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def make_tx(
    identity: Identity,
    nonce: int,
    payload: bytes,
    timestamp_ms: int,
    to: bytes = b"",
    amount: int = 0,
) -> Tx:
    unsigned = Tx(identity.node_id, nonce, timestamp_ms, payload, b"", to, amount)
    sig = identity.sign(unsigned.signing_bytes())
    return Tx(identity.node_id, nonce, timestamp_ms, payload, sig, to, amount)


def make_block(
    producer: Identity,
    network_id: str,
    height: int,
    prev_hash: bytes,
    timestamp_ms: int,
    txs: list[Tx],
    reveal: bytes = b"",
    mix: bytes = b"",
    state_root: bytes = b"",
) -> Block:
    header = BlockHeader(
        BLOCK_VERSION,
        network_id,
        height,
        prev_hash,
        timestamp_ms,
        producer.node_id,
        merkle_root([t.txid() for t in txs]),
        len(txs),
        reveal,
        mix,
        state_root,
    )
    h = header.compute_hash()
    return Block(header, h, producer.sign(BLOCK_DOMAIN + h), txs)
