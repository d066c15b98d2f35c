"""Property tests: whatever a peer sends as a block or transaction, decoding fails cleanly or
validation rejects it — never an exception escaping, never a stored invalid block."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netdiag.node.model import Block, BlockHeader, Tx, decode_block, decode_tx
from tests.unit.node.chainkit import Clock, extend, lab, open_chain

b32 = st.binary(min_size=32, max_size=32) | st.binary(max_size=40)
ints = st.integers(0, 2**64 - 1) | st.integers(-(2**63), 2**63 - 1)
txs = st.builds(
    Tx,
    sender=b32,
    nonce=ints,
    timestamp_ms=ints,
    payload=st.binary(max_size=64),
    signature=st.binary(max_size=70),
)
headers = st.builds(
    BlockHeader,
    version=st.integers(0, 2),
    network_id=st.sampled_from(["nd-test", "x"]),
    height=st.integers(0, 8) | ints,
    prev_hash=b32,
    timestamp_ms=ints,
    producer=b32,
    tx_root=b32,
    tx_count=st.integers(0, 4),
)
blocks = st.builds(
    Block, header=headers, hash=b32, signature=st.binary(max_size=70), txs=st.lists(txs, max_size=3)
)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_decoding_garbage_fails_cleanly(data: bytes) -> None:
    for decode in (decode_block, decode_tx):
        with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
            decode(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(blocks, min_size=1, max_size=4))
def test_random_blocks_are_never_stored(candidates: list[Block]) -> None:
    spec, keys = lab()
    clock = Clock()
    with tempfile.TemporaryDirectory() as d:
        chain = open_chain(Path(d), spec, clock)
        extend(chain, keys, clock, 2)
        tip = chain.store.tip()
        for b in candidates:
            try:
                raw = b.encode()
            except OverflowError:
                continue  # msgspec refuses to encode it, so no peer could send it
            res = chain.submit(decode_block(raw), len(raw))
            assert not res.accepted and (res.error is not None or res.duplicate)
        assert chain.store.tip() == tip and len(chain.orphans) == 0
        chain.store.close()
