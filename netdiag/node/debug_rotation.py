"""LAB ONLY fault hook (``debug_produce_future_rounds``): a validator that cheats the rotation.

Instead of waiting for a slot the schedule gives it on the local clock, the cheater looks
ahead through the rounds of the next height and, for the first one it owns whose timestamp a
peer would still accept as "not too far in the future", stamps a block for that round and
publishes it at once. ``netdiag bench attack`` (future_rounds) switches it on for one
validator; a node that takes a block's round from its own clock refuses such blocks.
Never enable it on a node that matters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from netdiag.node.messages import TOPIC_BLOCKS
from netdiag.node.model import make_block
from netdiag.node.schedule import producer_for

if TYPE_CHECKING:
    from netdiag.node.producer import Producer


def cheat_round(
    producer_of: Callable[[int], bytes],
    me: bytes,
    parent_ts_ms: int,
    now_ms: int,
    slot_ms: int,
    max_future_ms: int,
) -> tuple[int, int] | None:
    """(round, timestamp_ms) of the earliest round we own whose block timestamp is at most
    ``max_future_ms`` ahead of ``now_ms`` — starting at the round the clock is in now, so an
    honest slot of ours is taken as well. None if we own none in that horizon."""
    first = max(0, (now_ms - parent_ts_ms) // slot_ms - 1)
    round_ = first
    while True:
        ts = parent_ts_ms + (round_ + 1) * slot_ms
        if ts > now_ms + max_future_ms:
            return None
        if producer_of(round_) == me:
            return round_, max(ts, parent_ts_ms + slot_ms)
        round_ += 1


def produce_ahead(p: Producer) -> None:
    """Run instead of the honest producer step while the hook is on: stamp and publish a block
    for the earliest future round we own. Our own rules may refuse it (a node that checks the
    round against its clock); it is published all the same — the peers are what is attacked."""
    chain = p.chain
    if not p.quorum_connected() or not p.sync.synchronized():
        return
    params = p.genesis.params
    height = chain.height + 1
    seed = chain.seed_hash(height)
    me = p.identity.node_id
    pick = cheat_round(
        lambda r: producer_for(p.genesis.validators, seed, height, r),
        me,
        chain.tip.header.timestamp_ms,
        p.clock.wall_ms(),
        params.slot_ms,
        params.max_future_ms,
    )
    if pick is None or (height, pick[0]) in p.produced:
        return
    entropy = p.block_entropy(height)
    if entropy is None:
        return
    round_, ts = pick
    p.produced = {x for x in p.produced if x[0] >= height} | {(height, round_)}
    root = chain.ledger.root()  # no txs: the state stays as it is
    block = make_block(
        p.identity, p.genesis.network_id, height, chain.tip_hash, ts, [], *entropy, root
    )
    res = chain.submit(block)
    for b in res.accepted:
        p.ingest.committed(b, "local")
    _, sends = p.gossip.publish(TOPIC_BLOCKS, block.encode())
    p.peering.send_all(sends)
    p.log.warning(
        "debug_future_round",
        f"debug hook: published block {height} for round {round_}, "
        f"{ts - p.clock.wall_ms()} ms ahead of our clock "
        f"({'accepted' if res.error is None else 'refused: ' + res.error.reason} locally)",
        height=height,
        round=round_,
    )
