"""Per-peer count of getblocktxn requests left unanswered (compact block relay), no I/O.

A timeout adds one, any answer (late, "not held" or wrong) takes one off, and the count halves
every ``half_life_s``: a loaded or far peer is not evidence of wrongdoing, so no penalty, only
a count that ``CompactRelay`` reads to stop waiting on a peer that never answers. Bounded: at
most ``max_peers`` ids on record, the least recently counted forgotten first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

UNANSWERED_PEERS = 1024  # peer ids with unanswered requests on record, the oldest forgotten


class Unanswered:
    def __init__(
        self, clock: Callable[[], float], half_life_s: float, max_peers: int = UNANSWERED_PEERS
    ) -> None:
        self.clock = clock
        self.half_life_s = half_life_s
        self.max_peers = max_peers
        self.counts: OrderedDict[bytes, int] = OrderedDict()  # peer id -> timeouts, oldest first
        self.since: dict[bytes, float] = {}  # peer id -> start of its decay period

    def add(self, pid: bytes) -> None:
        """``pid`` let one request time out."""
        n = self.count(pid) + 1
        self.counts.pop(pid, None)
        self.counts[pid] = n  # the most recent last
        self.since.setdefault(pid, self.clock())
        while len(self.counts) > self.max_peers:
            old, _ = self.counts.popitem(last=False)
            self.since.pop(old, None)

    def count(self, pid: bytes) -> int:
        """``pid``'s timeouts on record, halved per ``half_life_s`` elapsed."""
        n = self.counts.get(pid, 0)
        if n <= 0:
            return 0
        now = self.clock()
        since = self.since.setdefault(pid, now)
        halvings = int((now - since) // self.half_life_s)
        if halvings > 0:
            n >>= min(halvings, 62)
            self.since[pid] = since + halvings * self.half_life_s
            self._set(pid, n)
        return n

    def credit(self, pid: bytes) -> None:
        """``pid`` answered one of our requests: one off its timeouts on record."""
        if pid in self.counts:
            self._set(pid, self.count(pid) - 1)

    def _set(self, pid: bytes, n: int) -> None:
        if n > 0:
            self.counts[pid] = n
        else:
            self.counts.pop(pid, None)
            self.since.pop(pid, None)
