"""Segment verification and the one-transaction segment commit, on a real SQLite store."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from netdiag.node.chain import Chain
from netdiag.node.errors import StoreError
from netdiag.node.genesis import ChainParams, lab_genesis
from netdiag.node.model import Block
from netdiag.node.segment import ChainBreak, verify_segment
from netdiag.node.store import Store
from tests.unit.node.chainkit import branch
from tests.unit.node.synckit import SLOT_MS, build_chain, forge


def setup(tmp: Path, n: int = 60) -> tuple[Chain, list[Block], list]:  # type: ignore[type-arg]
    ts = int(time.time() * 1000) - (n + 1000) * SLOT_MS
    spec, keys = lab_genesis(3, "seg", "nd-test", ts, ChainParams(epoch_length=8, slot_ms=SLOT_MS))
    return Chain(Store(tmp / "chain.sqlite"), spec), build_chain(spec, keys, n), keys


def test_verifies_across_epoch_boundaries_and_commits_atomically(tmp_path: Path) -> None:
    chain, blocks, _ = setup(tmp_path)
    res = verify_segment(chain, blocks[:40], int(time.time() * 1000))
    assert res.error is None and len(res.verified) == 40  # 5 epochs seeded from the segment
    chain.append_verified(res.verified)
    assert chain.height == 40 and chain.store.verify(depth=100) == 40


def test_break_stops_at_the_block_with_the_exact_reason(tmp_path: Path) -> None:
    chain, blocks, _ = setup(tmp_path)
    seg = [*blocks[:20], forge(blocks[20]), *blocks[21:30]]
    res = verify_segment(chain, seg, int(time.time() * 1000))
    assert len(res.verified) == 20 and isinstance(res.error, ChainBreak)
    assert res.error.detail.startswith(
        f"chain break at 21: expected prev_hash 0x{blocks[19].hash[:6].hex()}…, got 0x"
    )
    assert not res.fork_at_anchor and chain.height == 0  # verification never writes


def test_authentic_block_on_another_branch_at_the_anchor_is_a_fork(tmp_path: Path) -> None:
    chain, blocks, keys = setup(tmp_path)
    chain.append_verified(blocks[:10])
    other = branch(chain, keys, 9, 3)  # valid blocks forking below our tip
    assert other[1].height == 11 and other[1].header.prev_hash != blocks[9].hash
    res = verify_segment(chain, [other[1]], int(time.time() * 1000))
    assert res.fork_at_anchor and res.verified == []


def test_segment_commit_refuses_a_gap_and_keeps_nothing(tmp_path: Path) -> None:
    chain, blocks, _ = setup(tmp_path)
    with pytest.raises(StoreError, match="does not extend"):
        chain.store.commit_blocks([*blocks[:5], blocks[6]])
    assert chain.store.tip()[0] == 0  # rolled back: not even the first five
