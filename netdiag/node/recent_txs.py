"""Transactions recently evicted from the mempool or committed, kept so that a compact block
naming them can still be rebuilt (compact.py). Bounded in count and in bytes
(``compact_recent_txs``, ``compact_recent_bytes``), oldest dropped first."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Iterable

from netdiag.node.model import Tx


class RecentTxs:
    def __init__(self, max_txs: int, max_bytes: int, on_byte_drops: Callable[[int], None]) -> None:
        self.max_txs = max_txs
        self.max_bytes = max_bytes
        self.on_byte_drops = on_byte_drops  # told how many were dropped for the byte cap
        self.txs: OrderedDict[bytes, tuple[Tx, int]] = OrderedDict()  # txid -> (tx, size)
        self.bytes = 0

    def __len__(self) -> int:
        return len(self.txs)

    def __contains__(self, txid: bytes) -> bool:
        return txid in self.txs

    @property
    def enabled(self) -> bool:
        return self.max_txs > 0 and self.max_bytes > 0

    def get(self, txid: bytes) -> Tx | None:
        kept = self.txs.get(txid)
        return kept[0] if kept is not None else None

    def add(self, txs: Iterable[Tx]) -> None:
        """Keep ``txs`` (newest last); a tx bigger than the byte cap is not kept."""
        kept = self.txs
        for tx in txs:
            raw = tx.encode()
            txid = hashlib.sha256(raw).digest()  # Tx.txid(), without a second encode
            old = kept.pop(txid, None)
            if old is not None:
                self.bytes -= old[1]
            if len(raw) <= self.max_bytes:
                kept[txid] = (tx, len(raw))
                self.bytes += len(raw)
        while len(kept) > self.max_txs:
            self.bytes -= kept.popitem(last=False)[1][1]
        dropped = 0
        while self.bytes > self.max_bytes:
            self.bytes -= kept.popitem(last=False)[1][1]
            dropped += 1
        if dropped:
            self.on_byte_drops(dropped)
