"""Bounded mempool: validated transactions waiting for a block, oldest evicted first.

One transaction per (sender, nonce): a second one with the same nonce can never be included
beside the first (state.execute), so holding and relaying it would only let a sender with one
key fill every mempool on the mesh with transactions that cannot apply (first seen wins)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from netdiag.node.model import Tx


class Mempool:
    def __init__(self, max_txs: int = 10_000, max_bytes: int = 32 << 20) -> None:
        self.max_txs = max_txs
        self.max_bytes = max_bytes
        self._txs: OrderedDict[bytes, tuple[Tx, int]] = OrderedDict()
        self._bytes = 0
        self.evicted = 0
        self._slots: dict[tuple[bytes, int], bytes] = {}  # (sender, nonce) -> txid held
        self.on_evict: Callable[[Tx], None] | None = None  # told of each tx evicted for room

    def __len__(self) -> int:
        return len(self._txs)

    def __contains__(self, txid: bytes) -> bool:
        return txid in self._txs

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def get(self, txid: bytes) -> Tx | None:
        item = self._txs.get(txid)
        return item[0] if item is not None else None

    def holder(self, tx: Tx) -> bytes | None:
        """The txid of the transaction held for ``tx``'s sender and nonce, if any."""
        return self._slots.get((tx.sender, tx.nonce))

    def add(self, txid: bytes, tx: Tx, size: int) -> bool:
        if txid in self._txs or size > self.max_bytes or self.holder(tx) is not None:
            return False
        self._txs[txid] = (tx, size)
        self._slots[(tx.sender, tx.nonce)] = txid
        self._bytes += size
        while len(self._txs) > self.max_txs or self._bytes > self.max_bytes:
            _, (old, sz) = self._txs.popitem(last=False)
            self._slots.pop((old.sender, old.nonce), None)
            self._bytes -= sz
            self.evicted += 1
            if self.on_evict is not None:
                self.on_evict(old)
        return txid in self._txs

    def take(self, max_txs: int, max_bytes: int) -> list[Tx]:
        """Oldest first, within the block's limits (left in the pool until committed)."""
        out: list[Tx] = []
        used = 0
        for tx, size in self._txs.values():
            if len(out) >= max_txs or used + size > max_bytes:
                break
            out.append(tx)
            used += size
        return out

    def remove(self, txids: list[bytes]) -> None:
        for txid in txids:
            item = self._txs.pop(txid, None)
            if item is not None:
                self._bytes -= item[1]
                self._slots.pop((item[0].sender, item[0].nonce), None)

    def remove_committed(self, txs: list[Tx]) -> None:
        """Transactions a block committed leave, and so does any other one holding the same
        sender and nonce (it can no longer apply)."""
        gone = [t.txid() for t in txs]
        gone += [h for t in txs if (h := self.holder(t)) is not None]
        self.remove(gone)
