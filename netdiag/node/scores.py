"""Penalty scores that outlive a connection: per peer id and per IP, decaying with time.

The gossip router's score lives as long as the connection (mesh ranking, graylisting). These
scores are the node's memory of misbehaviour: a peer that breaks a rule once per connection
and reconnects meets its old score again, decayed with a half-life (``score_half_life_s``), so
violations that repeat faster than they decay add up to a ban. Per IP the penalties of every
peer id from that address add up too, so rotating keys from one address does not start
clean. Entries near zero or idle for ``score_retain_s`` are forgotten; both tables are
bounded. Bookkeeping only, with an injected clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
FORGET_BELOW = 0.5  # an entry whose penalty decayed under this is dropped


@dataclass
class Entry:
    penalty: float  # >= 0; the score is its negation
    stamp: float  # when ``penalty`` was last brought up to date
    violations: int = 0  # protocol violations on record (decay with the penalty)


class DecayingTable(Generic[K]):
    def __init__(
        self, clock: Callable[[], float], half_life_s: float, retain_s: float, max_entries: int
    ) -> None:
        self.clock = clock
        self.rate = math.log(2) / half_life_s
        self.retain_s = retain_s
        self.max_entries = max_entries
        self.entries: dict[K, Entry] = {}

    def _current(self, key: K, now: float) -> Entry | None:
        e = self.entries.get(key)
        if e is None:
            return None
        factor = math.exp(-self.rate * max(0.0, now - e.stamp))
        e.penalty *= factor
        e.stamp = now
        if e.violations and e.penalty < FORGET_BELOW:
            e.violations = 0
        return e

    def add(self, key: K, amount: float, violation: bool = False) -> Entry:
        now = self.clock()
        e = self._current(key, now)
        if e is None:
            if len(self.entries) >= self.max_entries:
                self._evict(now)
            e = self.entries[key] = Entry(0.0, now)
        e.penalty += amount
        e.violations += int(violation)
        return e

    def score(self, key: K) -> float:
        e = self._current(key, self.clock())
        return -e.penalty if e is not None else 0.0

    def violations(self, key: K) -> int:
        e = self._current(key, self.clock())
        return e.violations if e is not None else 0

    def expire(self) -> None:
        now = self.clock()
        for key in list(self.entries):
            e = self._current(key, now)
            if e is not None and (e.penalty < FORGET_BELOW or now - e.stamp > self.retain_s):
                del self.entries[key]

    def _evict(self, now: float) -> None:
        """Full: forget the mildest tenth (never the worst offenders)."""
        for key in list(self.entries):
            self._current(key, now)
        mild = sorted(self.entries, key=lambda k: self.entries[k].penalty)
        for key in mild[: max(1, len(mild) // 10)]:
            del self.entries[key]


class ScoreBook:
    def __init__(
        self,
        clock: Callable[[], float],
        half_life_s: float = 120.0,
        retain_s: float = 3600.0,
        max_entries: int = 10_000,
    ) -> None:
        self.peers: DecayingTable[bytes] = DecayingTable(clock, half_life_s, retain_s, max_entries)
        self.ips: DecayingTable[str] = DecayingTable(clock, half_life_s, retain_s, max_entries)

    def penalize(self, pid: bytes, ip: str, amount: float, violation: bool = False) -> float:
        """Record a penalty; returns the peer id's score after it."""
        self.ips.add(ip, amount, violation)
        return -self.peers.add(pid, amount, violation).penalty

    def peer_score(self, pid: bytes) -> float:
        return self.peers.score(pid)

    def ip_score(self, ip: str) -> float:
        return self.ips.score(ip)

    def expire(self) -> None:
        self.peers.expire()
        self.ips.expire()
