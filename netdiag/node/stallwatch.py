"""The write-stall watch, sans I/O: is a peer with our output waiting still taking it?

While output waits for the peer, in the node (our queue, asyncio's buffer) or in the kernel's
send queue (SIOCOUTQ: sent and unacknowledged, or unsent), the peer must acknowledge a byte per
``timeout_s`` (else ``write_stall``: a zero window, it stopped reading) and, on average since
the watch started, MIN_PEER_RATE with one timeout of slack (else ``write_slow``: a drip that
holds our buffers at a segment per timeout), unless it catches up with all that was
outstanding at the mark, which starts the watch again (a peer keeping up with a trickle of
output is kept). The average, not a quota per timeout: an honest peer on a lossy link may get
a burst, then wait out an RTO backoff or a brief zero window. Without a floor any acknowledged
byte reset the clock, and a reader taking a segment per timeout (~160 B/s) held up to a send
buffer in the kernel and the write cap in the node for ever.

The kernel's queue counts on its own: a peer that asks for less than the kernel's send buffer
plus its own window, then stops reading, leaves the node's buffers empty while megabytes wait
unacknowledged in the kernel's. The watch ends once nothing waits in either. After a graceful
close it watches the last output going out the same way, for at most CLOSE_WAIT_MAX timeouts,
and either rule ends it with a reset (nothing to report: the connection is closed already).

The transport reads the numbers (one getsockopt for progress, one ioctl for the kernel's queue
per check), feeds them in with the time, and acts on the Decision: this module does no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from netdiag.node.limits import MIN_PEER_RATE

# a graceful close lets a reader that keeps acknowledging take its last output for at most this
# many timeouts (120 s by default: 16 MiB at ~140 KB/s), then resets the socket: a closed
# connection's budget and slot are already released, so nothing else bounds it
CLOSE_WAIT_MAX = 12


class Verdict(Enum):
    KEEP = "keep"  # check again in ``Decision.check_in`` s
    DONE = "done"  # nothing waits: the watch ends (the next write starts another)
    RESET = "reset"  # a graceful close's output is not taken: reset the socket, report nothing
    WRITE_STALL = "write_stall"  # cut: nothing acknowledged for the timeout
    WRITE_SLOW = "write_slow"  # cut: moving, but under MIN_PEER_RATE (not scored: policy.py)


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str = ""  # why, for a cut (write_stall / write_slow)
    check_in: float | None = None  # KEEP: seconds until the next check


class StallWatch:
    """One connection's watch. ``progress`` is what the peer acknowledged (tcpi_bytes_acked),
    or, on a socket that does not report it, what the socket took from us; the caller decides
    once which, so the two are never compared."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s  # 0: off
        self._mark = 0  # progress at the last check that saw enough of it
        self._need = 0  # progress from _mark that restarts the watch: all outstanding then
        self._watch_from = 0.0  # when the watch (its average) started
        self._last_progress = 0  # progress at the last check; _progress_at: when it last grew
        self._progress_at = 0.0
        self.close_wait = False  # watching a graceful close's last output
        self.close_by = 0.0  # ... and whatever the progress, not past this (CLOSE_WAIT_MAX)

    @property
    def interval(self) -> float:
        """How often a running watch checks: a quarter timeout, so a cut comes at most that
        late and a brief pause (well under a timeout) is never judged alone."""
        return self.timeout_s / 4

    def start(self, progress: int, outstanding: int, now: float) -> None:
        """(Re)start the watch here; ``outstanding``: our output still waiting for the peer
        (node and kernel) — acknowledging all of it restarts the watch."""
        self._mark, self._progress_at = progress, now
        self._watch_from, self._last_progress = now, progress
        self._need = max(1, outstanding)

    def close(self, progress: int, outstanding: int, now: float, watching: bool) -> None:
        """A graceful close whose last output still waits. ``watching``: output already waited
        (a watch runs): keep its mark, so the peer gets one timeout in all, not that much more;
        the close moved the node's queue out, so catching up now means all of that too."""
        self.close_wait = True
        self.close_by = now + CLOSE_WAIT_MAX * self.timeout_s
        if watching:
            self._need = max(self._need, progress - self._mark + outstanding)
        else:
            self.start(progress, outstanding, now)

    def check(self, held: int, kernel: int, progress: int, now: float) -> Decision:
        """A check at ``now``: ``held`` bytes wait in the node (after a graceful close: in
        asyncio's buffer), ``kernel`` in the kernel's send queue (0 where the socket does not
        report progress as acknowledged bytes: that queue would never be seen to move), and
        the peer's ``progress`` so far."""
        if not held and (self.close_wait or not kernel):
            # after a close, asyncio closes the socket once its buffer is out: the kernel's
            # queue is then bounded by TCP_USER_TIMEOUT, not by us
            self.close_wait = False
            return Decision(Verdict.DONE)
        if self.close_wait and now >= self.close_by:
            self.close_wait = False
            return Decision(Verdict.RESET)
        if progress - self._mark >= self._need:
            self.start(progress, held + kernel, now)  # caught up with all that was outstanding
            return Decision(Verdict.KEEP, check_in=self.interval)
        if progress > self._last_progress:
            self._last_progress, self._progress_at = progress, now
        elapsed = now - self._watch_from
        got = progress - self._mark
        floor = MIN_PEER_RATE * (elapsed - self.timeout_s)
        stalled = now - self._progress_at >= self.timeout_s
        if not (stalled or got < floor):
            return Decision(Verdict.KEEP, check_in=self.interval)
        if self.close_wait:
            self.close_wait = False
            return Decision(Verdict.RESET)
        where = f"{held} bytes waiting" if held else f"{kernel} bytes in the kernel's queue"
        if stalled:
            return Decision(
                Verdict.WRITE_STALL,
                f"write stalled: peer does not read ({where}, nothing acknowledged "
                f"in {now - self._progress_at:.1f} s)",
            )
        return Decision(
            Verdict.WRITE_SLOW,
            f"write too slow: peer reads under {MIN_PEER_RATE} B/s ({where}, {got} "
            f"acknowledged in {elapsed:.1f} s, under {int(floor)})",
        )
