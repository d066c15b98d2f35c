"""Fork choice: the longest valid branch wins, within a depth limit, switched atomically."""

from __future__ import annotations

from pathlib import Path

import msgspec

from netdiag.node.chain import ReorgTooDeep
from netdiag.node.validation import BadSignature, Orphan
from tests.unit.node.chainkit import Clock, branch, extend, lab, next_block, open_chain, txs


def test_longer_branch_replaces_ours_and_returns_dropped_blocks(tmp_path: Path) -> None:
    spec, keys = lab(validators=3, epoch=4)
    clock = Clock()
    chain = open_chain(tmp_path, spec, clock)
    ours = extend(chain, keys, clock, 3)
    mine = txs(2, keys[0])
    b4 = next_block(chain, keys, mine)  # our block 4 carries two txs the reorg drops
    clock.ms = b4.header.timestamp_ms
    assert chain.submit(b4).accepted
    ours += [b4, *extend(chain, keys, clock, 1)]
    theirs = branch(chain, keys, fork=2, n=4, txs_at={3: txs(1, keys[1], 500)})
    clock.ms = theirs[-1].header.timestamp_ms
    res = chain.reorg(theirs, max_depth=64)
    assert res.error is None and res.depth == 3
    assert [b.hash for b in res.dropped] == [b.hash for b in ours[2:]]
    assert chain.height == 6 and chain.tip_hash == theirs[-1].hash
    assert chain.store.verify(depth=100) == 6
    assert chain.store.has_tx(theirs[0].txs[0].txid())
    assert not any(chain.store.has_tx(t.txid()) for t in mine)
    assert [t.txid() for t in res.dropped[1].txs] == [t.txid() for t in mine]
    # and the chain extends normally afterwards
    extend(chain, keys, clock, 1)
    assert chain.height == 7


def test_equal_or_shorter_branch_keeps_ours(tmp_path: Path) -> None:
    spec, keys = lab()
    clock = Clock()
    chain = open_chain(tmp_path, spec, clock)
    extend(chain, keys, clock, 5)
    tip = chain.tip_hash
    clock.ms += 10 * 1000
    res = chain.reorg(branch(chain, keys, fork=2, n=3), max_depth=64)
    assert res.error is None and not res.adopted and chain.tip_hash == tip


def test_invalid_branch_or_too_deep_or_detached_changes_nothing(tmp_path: Path) -> None:
    spec, keys = lab()
    clock = Clock()
    chain = open_chain(tmp_path, spec, clock)
    extend(chain, keys, clock, 5)
    tip = chain.tip_hash
    theirs = branch(chain, keys, fork=1, n=6)
    clock.ms = theirs[-1].header.timestamp_ms
    bad = [*theirs[:3], msgspec.structs.replace(theirs[3], signature=b"\x00" * 64), *theirs[4:]]
    assert isinstance(chain.reorg(bad, 64).error, BadSignature)
    assert isinstance(chain.reorg(theirs, max_depth=2).error, ReorgTooDeep)
    assert isinstance(chain.reorg(theirs[2:], 64).error, Orphan)
    assert chain.tip_hash == tip and chain.store.verify(depth=100) == 5
    res = chain.reorg(theirs, 64)
    assert res.error is None and chain.height == 7
