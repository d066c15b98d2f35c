"""Test helpers: a small lab chain with known keys and a controllable clock."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from netdiag.node import testkit
from netdiag.node.chain import Chain
from netdiag.node.crypto import Identity
from netdiag.node.errors import ValidationError
from netdiag.node.genesis import ChainParams, GenesisSpec, lab_genesis
from netdiag.node.model import Block, Tx, make_block, make_tx
from netdiag.node.state import Overlay, execute
from netdiag.node.store import Store

T0 = 1_700_000_000_000
SLOT = 1000


@dataclass
class Clock:
    ms: int = T0

    def __call__(self) -> int:
        return self.ms


def lab(
    validators: int = 3,
    epoch: int = 4,
    allocations: list[tuple[bytes, int]] | None = None,
    **params: int,
) -> tuple[GenesisSpec, list[Identity]]:
    return lab_genesis(
        validators,
        "test",
        "nd-test",
        T0,
        ChainParams(epoch_length=epoch, slot_ms=SLOT, **params),
        allocations=allocations,
    )


def open_chain(tmp: Path, spec: GenesisSpec, clock: Clock) -> Chain:
    return Chain(Store(tmp / "chain.sqlite"), spec, clock_ms=clock)


def next_block(
    chain: Chain, keys: list[Identity], txs: list[Tx] | None = None, round_: int = 0
) -> Block:
    """The valid successor of the tip, produced by whoever is scheduled."""
    ts = chain.tip.header.timestamp_ms + SLOT * (round_ + 1)
    producer, height, _ = chain.scheduled_producer(ts)
    key = next(k for k in keys if k.node_id == producer)
    state = Overlay(chain.ledger)
    for tx in txs or []:
        # a test of an invalid block: an earlier rule is meant to catch it
        with contextlib.suppress(ValidationError):
            execute(tx, state)
    return make_block(
        key,
        chain.genesis.network_id,
        height,
        chain.tip_hash,
        ts,
        txs or [],
        state_root=state.root(),
    )


def commit(chain: Chain, keys: list[Identity], clock: Clock, txs: list[Tx] | None = None) -> Block:
    """The tip's valid successor (with ``txs``), at its slot on ``clock``, accepted."""
    b = next_block(chain, keys, txs)
    clock.ms = b.header.timestamp_ms
    res = chain.submit(b)
    assert res.error is None, res.error
    return b


def extend(chain: Chain, keys: list[Identity], clock: Clock, n: int) -> list[Block]:
    return [commit(chain, keys, clock) for _ in range(n)]


def txs(n: int, who: Identity, start: int = 0) -> list[Tx]:
    return [make_tx(who, start + i, f"pay {i}".encode(), T0) for i in range(n)]


def branch(
    chain: Chain,
    keys: list[Identity],
    fork: int,
    n: int,
    round_: int = 1,
    txs_at: dict[int, list[Tx]] | None = None,
) -> list[Block]:
    """``n`` valid blocks on top of our block at ``fork`` (a competing branch: produced in a
    later round than ours, so by other producers and with other timestamps)."""
    parent = chain.store.block_at(fork)
    assert parent is not None
    return testkit.build_chain(
        chain.genesis,
        keys,
        n,
        parent=parent,
        seed_at=chain.store.hash_at,
        round_=round_,
        txs=lambda h: (txs_at or {}).get(h, []),
        state=chain.ledger.rewound(fork, chain.height),
    )
