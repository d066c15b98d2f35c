"""The unanswered-getblocktxn ledger on its own: counts, credit, halving, bound (no I/O)."""

from __future__ import annotations

from netdiag.node.unanswered import Unanswered


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_timeouts_count_answers_credit_and_the_count_halves_per_half_life() -> None:
    clock = Clock()
    u = Unanswered(clock, half_life_s=10.0)
    for _ in range(5):
        u.add(b"p")
    assert u.count(b"p") == 5
    u.credit(b"p")
    assert u.count(b"p") == 4
    clock.t += 10.0
    assert u.count(b"p") == 2
    clock.t += 25.0  # two more halvings (the half period left over carries on)
    assert u.count(b"p") == 0 and b"p" not in u.counts and b"p" not in u.since
    u.credit(b"q")  # an answer from a peer with nothing on record changes nothing
    assert u.count(b"q") == 0 and not u.counts


def test_at_most_max_peers_on_record_the_least_recently_counted_forgotten() -> None:
    u = Unanswered(Clock(), half_life_s=10.0, max_peers=3)
    for pid in (b"a", b"b", b"c"):
        u.add(pid)
    u.add(b"a")  # a counted again: now the most recent
    u.add(b"d")
    assert list(u.counts) == [b"c", b"a", b"d"] and set(u.since) == {b"a", b"c", b"d"}
    assert u.count(b"a") == 2 and u.count(b"b") == 0
