"""Time and timers as the core sees them: an injected clock and scheduler.

The sans-IO core never asks asyncio or the module clock for the time; the asyncio shell hands
it a ``SystemClock`` and a ``LoopScheduler``, tests a ``ManualClock`` and ``ManualScheduler``
that run callbacks only when the test advances time, so core tests are deterministic.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

T = TypeVar("T")


class Clock(Protocol):
    def monotonic(self) -> float: ...  # seconds, for timeouts and rates
    def wall_ms(self) -> int: ...  # Unix milliseconds, for block timestamps and slots


class Scheduler(Protocol):
    def call_soon(self, fn: Callable[[], None]) -> None: ...
    def call_later(self, delay_s: float, fn: Callable[[], None]) -> None: ...
    def off_loop(self, fn: Callable[[], T], done: Callable[[T], None]) -> None: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def wall_ms(self) -> int:
        return time.time_ns() // 1_000_000


class LoopScheduler:
    """Callbacks on the running asyncio loop."""

    def call_soon(self, fn: Callable[[], None]) -> None:
        asyncio.get_running_loop().call_soon(fn)

    def call_later(self, delay_s: float, fn: Callable[[], None]) -> None:
        asyncio.get_running_loop().call_later(delay_s, fn)

    def off_loop(self, fn: Callable[[], T], done: Callable[[T], None]) -> None:
        """``fn`` in a worker thread (work that waits with the GIL released, e.g. on the
        signature pool's processes); ``done(result)`` back on the loop. ``fn`` must not
        raise: it is the caller's to catch (a lost exception here would lose ``done``)."""
        fut = asyncio.get_running_loop().run_in_executor(None, fn)
        fut.add_done_callback(lambda f: done(f.result()))


class ManualClock:
    """A clock that moves only when told to (wall time follows monotonic time)."""

    def __init__(self, start_s: float = 1000.0, wall_ms: int = 1_700_000_000_000) -> None:
        self.now = start_s
        self._wall0 = wall_ms - round(start_s * 1000)

    def monotonic(self) -> float:
        return self.now

    def wall_ms(self) -> int:
        return self._wall0 + round(self.now * 1000)


class ManualScheduler:
    """Runs due callbacks when ``run(clock, seconds)`` advances the clock."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()

    def call_soon(self, fn: Callable[[], None]) -> None:
        self.call_later(0.0, fn)

    def off_loop(self, fn: Callable[[], T], done: Callable[[T], None]) -> None:
        """Runs ``fn`` now; ``done`` is called back in a later turn, as on a real loop."""
        out = fn()
        self.call_soon(lambda: done(out))

    def call_later(self, delay_s: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._queue, (self.clock.now + max(0.0, delay_s), next(self._seq), fn))

    def run_due(self) -> int:
        """Run every callback due now (including ones they schedule for now)."""
        ran = 0
        while self._queue and self._queue[0][0] <= self.clock.now:
            _, _, fn = heapq.heappop(self._queue)
            fn()
            ran += 1
        return ran

    def advance(self, seconds: float) -> None:
        """Move the clock forward, running each callback at its due time."""
        end = self.clock.now + seconds
        while self._queue and self._queue[0][0] <= end:
            self.clock.now = max(self.clock.now, self._queue[0][0])
            self.run_due()
        self.clock.now = end
        self.run_due()
