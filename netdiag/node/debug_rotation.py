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
