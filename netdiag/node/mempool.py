"""Bounded mempool: validated transactions waiting for a block, oldest evicted first."""

from __future__ import annotations

from collections import OrderedDict

from netdiag.node.model import Tx


class Mempool:
    def __init__(self, max_txs: int = 10_000, max_bytes: int = 32 << 20) -> None:
        self.max_txs = max_txs
        self.max_bytes = max_bytes
        self._txs: OrderedDict[bytes, tuple[Tx, int]] = OrderedDict()
        self._bytes = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._txs)

    def __contains__(self, txid: bytes) -> bool:
        return txid in self._txs

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def add(self, txid: bytes, tx: Tx, size: int) -> bool:
        if txid in self._txs or size > self.max_bytes:
            return False
        self._txs[txid] = (tx, size)
        self._bytes += size
        while len(self._txs) > self.max_txs or self._bytes > self.max_bytes:
            _, (_, sz) = self._txs.popitem(last=False)
            self._bytes -= sz
            self.evicted += 1
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
