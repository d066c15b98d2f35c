"""The lab-only rotation cheat picks the earliest round it owns within the future bound."""

from __future__ import annotations

from netdiag.node.debug_rotation import cheat_round

ME, OTHER = b"m" * 32, b"o" * 32


def test_earliest_owned_round_from_the_current_one() -> None:
    owner = {0: OTHER, 1: OTHER, 2: OTHER, 3: ME}
    r = cheat_round(lambda r: owner.get(r, OTHER), ME, 1000, 1000 + 1500, 500, 5000)
    assert r == (3, 1000 + 4 * 500)  # current round is 2; round 3 is ours, 0.5 s ahead


def test_none_beyond_the_future_bound_and_current_round_counts() -> None:
    assert cheat_round(lambda r: ME if r == 20 else OTHER, ME, 0, 600, 500, 5000) is None
    assert cheat_round(lambda r: ME, ME, 0, 5200, 500, 5000) == (9, 5000)
