"""Account state: balances and nonces, its commitment (the state root) and block execution.

An account is ``(balance, nonce)`` under a 32-byte Ed25519 key. The state root commits to
every account, sorted by key, in a two-level Merkle tree: the 256 **buckets** (a key's first
byte) each have a root over their accounts' leaves in key order, and the state root is the
tree over the 256 bucket roots in bucket order. Leaf = SHA-256(0x00 || msgpack([key, balance,
nonce])), inner node = SHA-256(0x01 || left || right), an odd node is promoted (model.py's
rule), an empty bucket's root is SHA-256(""). Applying a block re-hashes only the buckets it
touched, so a block costs its transactions, not the size of the state; and a snapshot chunk
(snapshot.py) holding whole buckets can be checked against the bucket roots on arrival.

Execution rules (``execute``): a tx's nonce must be at least the sender's account nonce (a
replayed tx never is; gaps are allowed, so a client needs no round trip to learn its next
nonce), and afterwards the account nonce is ``tx.nonce + 1``; a transfer (32-byte ``to``)
moves ``amount`` from the sender, who must hold it; a tx without ``to`` carries data only and
must move nothing. Accounts come into being when first touched.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterable, Iterator
from typing import NamedTuple, Protocol

import msgspec

from netdiag.node.errors import ValidationError
from netdiag.node.model import Block, Tx, merkle_of_hashes

BUCKETS = 256
MAX_BALANCE = 2**63 - 1
_enc = msgspec.msgpack.Encoder()


class Account(NamedTuple):
    balance: int
    nonce: int


EMPTY = Account(0, 0)


class BadNonce(ValidationError):
    """A replayed or out-of-order transaction: its nonce is below the sender's."""

    reason = "nonce"


class InsufficientBalance(ValidationError):
    reason = "balance"


class BadStateRoot(ValidationError):
    reason = "state_root"


def bucket_of(key: bytes) -> int:
    return key[0]


def leaf_hash(key: bytes, acct: Account) -> bytes:
    return hashlib.sha256(b"\x00" + _enc.encode((key, acct.balance, acct.nonce))).digest()


def bucket_root(leaves: dict[bytes, bytes]) -> bytes:
    return merkle_of_hashes([leaves[k] for k in sorted(leaves)])


def root_of_buckets(roots: list[bytes]) -> bytes:
    return merkle_of_hashes(roots)


class StateReader(Protocol):
    def get(self, key: bytes) -> Account | None: ...
    def bucket_roots(self) -> list[bytes]: ...
    def bucket_leaves(self, b: int) -> dict[bytes, bytes]: ...
    def root(self) -> bytes: ...


class Overlay:
    """Changes over a base state (a ledger or another overlay), never written to it: a block
    being validated, a producer's candidate, a sync segment, a fork branch."""

    def __init__(self, base: StateReader) -> None:
        self.base = base
        self.changes: dict[bytes, Account | None] = {}  # None: the account does not exist
        self._by_bucket: dict[int, dict[bytes, Account | None]] = {}
        self._roots: list[bytes] | None = None
        self._root: bytes | None = None

    def get(self, key: bytes) -> Account | None:
        if key in self.changes:
            return self.changes[key]
        return self.base.get(key)

    def set(self, key: bytes, acct: Account | None) -> None:
        self.changes[key] = acct
        self._by_bucket.setdefault(bucket_of(key), {})[key] = acct
        self._roots = self._root = None

    def bucket_leaves(self, b: int) -> dict[bytes, bytes]:
        # one copy of the ledger's bucket with every overlay's changes on top, newest last
        layers: list[dict[bytes, Account | None]] = []
        node: StateReader = self
        while isinstance(node, Overlay):
            if b in node._by_bucket:
                layers.append(node._by_bucket[b])
            node = node.base
        leaves = dict(node.bucket_leaves(b))
        for layer in reversed(layers):
            for key, acct in layer.items():
                if acct is None:
                    leaves.pop(key, None)
                else:
                    leaves[key] = leaf_hash(key, acct)
        return leaves

    def bucket_roots(self) -> list[bytes]:
        if self._roots is None:
            roots = list(self.base.bucket_roots())
            for b in self._by_bucket:
                roots[b] = bucket_root(self.bucket_leaves(b))
            self._roots = roots
        return self._roots

    def root(self) -> bytes:
        """Over unchanged buckets the base's root (an empty block's state is its parent's:
        no 255 hashes per block); else computed once per change."""
        if not self._by_bucket:
            return self.base.root()
        if self._root is None:
            self._root = root_of_buckets(self.bucket_roots())
        return self._root


def execute(tx: Tx, state: Overlay) -> None:
    """Apply one transaction to ``state`` or raise why it cannot be applied (nothing changed)."""
    sender = state.get(tx.sender) or EMPTY
    if tx.nonce < sender.nonce:
        raise BadNonce(
            f"tx nonce {tx.nonce} is below sender 0x{tx.sender[:6].hex()}…'s nonce "
            f"{sender.nonce} (replayed or superseded)"
        )
    if tx.amount > sender.balance:
        raise InsufficientBalance(
            f"tx moves {tx.amount} but sender 0x{tx.sender[:6].hex()}… holds {sender.balance}"
        )
    state.set(tx.sender, Account(sender.balance - tx.amount, tx.nonce + 1))
    if tx.to:
        dest = state.get(tx.to) or EMPTY
        if dest.balance + tx.amount > MAX_BALANCE:
            raise InsufficientBalance(f"transfer would overflow 0x{tx.to[:6].hex()}…'s balance")
        state.set(tx.to, Account(dest.balance + tx.amount, dest.nonce))


def execute_block(block: Block, base: StateReader) -> Overlay:
    """The state after ``block`` on ``base``; raises the first tx's error or a root mismatch."""
    out = Overlay(base)
    for i, tx in enumerate(block.txs):
        try:
            execute(tx, out)
        except ValidationError as e:
            raise type(e)(f"block {block.height} tx {i}: {e.detail}") from e
    root = out.root()
    if block.header.state_root != root:
        raise BadStateRoot(
            f"block {block.height} state_root 0x{block.header.state_root[:6].hex()}… does not "
            f"match the state its transactions leave (0x{root[:6].hex()}…)"
        )
    return out


class StateCopy:
    """The state at one moment, detached from the ledger (which moves on): what a snapshot
    build off the loop reads (snapshot.build takes a Ledger or this)."""

    def __init__(self, ledger: Ledger) -> None:
        self.accounts = dict(ledger.accounts)  # Account is immutable: a shallow copy is enough
        self._keys = [list(ledger.bucket_leaves(b)) for b in range(BUCKETS)]
        self._roots = list(ledger.bucket_roots())

    def bucket_roots(self) -> list[bytes]:
        return self._roots

    def bucket_leaves(self, b: int) -> list[bytes]:
        """The keys in bucket ``b``."""
        return self._keys[b]


class Ledger:
    """The committed state at the tip, with undo records for the last ``undo_depth`` blocks
    (a reorg rewinds through them)."""

    def __init__(self, accounts: Iterable[tuple[bytes, Account]] = (), undo_depth: int = 128):
        self.accounts: dict[bytes, Account] = {}
        self._leaves: list[dict[bytes, bytes]] = [{} for _ in range(BUCKETS)]
        for key, acct in accounts:
            self.accounts[key] = acct
            self._leaves[bucket_of(key)][key] = leaf_hash(key, acct)
        self._roots = [bucket_root(leaves) for leaves in self._leaves]
        self._root: bytes | None = None  # root_of_buckets(_roots), until _write
        self.undo_depth = undo_depth
        self._undo: deque[tuple[int, dict[bytes, Account | None]]] = deque()

    def __len__(self) -> int:
        return len(self.accounts)

    def get(self, key: bytes) -> Account | None:
        return self.accounts.get(key)

    def bucket_roots(self) -> list[bytes]:
        return self._roots

    def bucket_leaves(self, b: int) -> dict[bytes, bytes]:
        return self._leaves[b]

    def root(self) -> bytes:
        if self._root is None:
            self._root = root_of_buckets(self._roots)
        return self._root

    def sorted_items(self) -> Iterator[tuple[bytes, Account]]:
        for key in sorted(self.accounts):
            yield key, self.accounts[key]

    def _write(self, changes: dict[bytes, Account | None]) -> dict[bytes, Account | None]:
        old: dict[bytes, Account | None] = {}
        touched: set[int] = set()
        self._root = None
        for key, acct in changes.items():
            old[key] = self.accounts.get(key)
            b = bucket_of(key)
            touched.add(b)
            if acct is None:
                self.accounts.pop(key, None)
                self._leaves[b].pop(key, None)
            else:
                self.accounts[key] = acct
                self._leaves[b][key] = leaf_hash(key, acct)
        for b in touched:
            self._roots[b] = bucket_root(self._leaves[b])
        return old

    def advance(self, block: Block) -> None:
        """Apply a block that validation already accepted on this state."""
        ov = Overlay(self)
        for tx in block.txs:
            execute(tx, ov)
        self._undo.append((block.height, self._write(ov.changes)))
        while len(self._undo) > self.undo_depth:
            self._undo.popleft()

    def rewound(self, height: int, tip: int) -> Overlay | None:
        """A view of the state at ``height`` (tip = our tip's height), None without undo
        records that deep."""
        ov = Overlay(self)
        if height >= tip:
            return ov
        if not self._undo or self._undo[0][0] > height + 1 or self._undo[-1][0] != tip:
            return None
        for h, old in reversed(self._undo):
            if h <= height:
                break
            for key, acct in old.items():
                ov.set(key, acct)
        return ov

    def rewind(self, height: int) -> None:
        while self._undo and self._undo[-1][0] > height:
            _, old = self._undo.pop()
            self._write(old)


def materialize(reader: StateReader, undo_depth: int = 128) -> Ledger:
    """A ledger of its own holding the state ``reader`` shows (a ledger or overlays on one)."""
    layers: list[dict[bytes, Account | None]] = []
    node = reader
    while isinstance(node, Overlay):
        layers.append(node.changes)
        node = node.base
    assert isinstance(node, Ledger)
    accounts = dict(node.accounts)
    for layer in reversed(layers):
        for key, acct in layer.items():
            if acct is None:
                accounts.pop(key, None)
            else:
                accounts[key] = acct
    return Ledger(accounts.items(), undo_depth)


def genesis_ledger(allocations: Iterable[tuple[bytes, int]], undo_depth: int = 128) -> Ledger:
    return Ledger(((k, Account(v, 0)) for k, v in allocations), undo_depth)
