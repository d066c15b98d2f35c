"""Blocks in a run (a sync answer near the tip, blockrun.py): block N+1's signatures are at
the pool before block N's are waited for, and the run is decided exactly as block by block —
a producer-signed block carrying a forged tx is rejected for that tx, the blocks before it
committed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from netdiag.node import crypto
from netdiag.node.crypto import Identity
from netdiag.node.model import BLOCK_DOMAIN, Tx, make_tx
from netdiag.node.sigpool import SigCheck
from netdiag.node.testkit import build_chain
from tests.unit.node.corekit import World, lab


def forged(tx: Tx) -> Tx:
    sig = bytes([tx.signature[0] ^ 1]) + tx.signature[1:]
    return Tx(tx.sender, tx.nonce, tx.timestamp_ms, tx.payload, sig, tx.to, tx.amount)


class RecordingSigs:
    """A pool that proves what the node's rule verifies and records when each block's batch
    was sent and waited for."""

    def __init__(self, heights: dict[bytes, int]) -> None:
        self.heights = heights  # signed block message -> height
        self.log: list[tuple[str, int]] = []

    def prove_soon(self, items: list[SigCheck], chunk: int = 0) -> Callable[[], list[SigCheck]]:
        h = self.heights[items[0][2]]
        self.log.append(("sent", h))

        def wait() -> list[SigCheck]:
            self.log.append(("waited", h))
            return [it for it in items if crypto.verify_raw(*it)]

        return wait


def test_the_next_block_is_at_the_pool_while_this_one_is_checked(tmp_path: Path) -> None:
    spec, keys = lab(3)
    world = World(tmp_path, spec)
    core = world.node("n", produce=False)
    who = Identity.generate()
    ts = spec.timestamp_ms

    def txs(height: int) -> list[Tx]:
        out = [make_tx(who, height * 10 + i, b"r", ts) for i in range(5)]
        return [forged(t) if height == 3 and i == 2 else t for i, t in enumerate(out)]

    blocks = build_chain(spec, keys, 4, txs=txs)
    raws = [b.encode() for b in blocks]
    sigs = RecordingSigs({BLOCK_DOMAIN + b.hash: b.height for b in blocks})
    core.ingest.run.sigs = sigs  # type: ignore[assignment]
    outcomes = []
    for i, raw in enumerate(raws):
        nxt = raws[i + 1] if i + 1 < len(raws) else None
        outcomes.append(core.ingest.apply_block(None, raw, "sync", next_raw=nxt))
        if outcomes[-1] != "accepted":
            break
    assert outcomes == ["accepted", "accepted", "rejected"]
    assert core.chain.height == 2
    assert [e["reason"] for e in world.events("n", "block_rejected")] == ["tx_signature"]
    log = sigs.log
    for h in (1, 2, 3):  # block h+1 sent before block h is waited for
        assert log.index(("sent", h + 1)) < log.index(("waited", h))
    assert ("waited", 4) not in log  # its turn never came
