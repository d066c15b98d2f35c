"""The write-stall watch on its own (stallwatch.py, sans I/O): numbers in, decisions out, no
socket, no loop. What waits, what the peer has acknowledged and the time are the test's."""

from __future__ import annotations

from collections.abc import Callable

from netdiag.node.limits import MIN_PEER_RATE
from netdiag.node.stallwatch import CLOSE_WAIT_MAX, Decision, StallWatch, Verdict

T = 10.0  # the stall timeout
T0 = 1000.0
WAITING = 4 << 20  # what waits in the kernel for a reader that takes it slowly


def run(
    acked_by: Callable[[float], int], timeouts: float, outstanding: int = WAITING
) -> tuple[Decision, float]:
    """A watch over ``outstanding`` bytes in the kernel (new output keeps it that full) of which
    the peer has acknowledged ``acked_by(t)`` t seconds in, checked at its own interval: the
    first decision that is not KEEP (or the last KEEP), and when it came, in timeouts."""
    w = StallWatch(T)
    w.start(0, outstanding, T0)
    d, t = Decision(Verdict.KEEP), 0.0
    while t < timeouts * T:
        t += w.interval
        acked = acked_by(t)
        d = w.check(0, outstanding, acked, T0 + t)
        if d.verdict is not Verdict.KEEP:
            break
        assert d.check_in == T / 4
    return d, t / T


def test_zero_progress_for_a_timeout_is_write_stall() -> None:
    d, at = run(lambda t: 0, 10)
    assert d.verdict is Verdict.WRITE_STALL and at == 1.0, (d, at)
    assert "nothing acknowledged in 10.0 s" in d.reason and "kernel's queue" in d.reason


def test_a_moving_reader_under_the_floor_is_write_slow_after_one_timeout_of_slack() -> None:
    d, at = run(lambda t: int(160 * t), 10)  # a segment per check: always moving
    assert d.verdict is Verdict.WRITE_SLOW and 1.0 < at <= 1.5, (d, at)
    assert f"under {MIN_PEER_RATE} B/s" in d.reason


def test_a_reader_at_the_floor_is_kept() -> None:
    d, _ = run(lambda t: int(MIN_PEER_RATE * t), 20)
    assert d.verdict is Verdict.KEEP, d


def test_a_burst_then_a_pause_of_a_timeout_is_kept_on_its_average() -> None:
    burst = int(MIN_PEER_RATE * T)

    def acked(t: float) -> int:  # a timeout's worth in the first check, a pause, then the floor
        if t < T / 4 + T:
            return burst
        return burst + int(MIN_PEER_RATE * (t - T / 4 - T + 1))

    d, _ = run(acked, 10)
    assert d.verdict is Verdict.KEEP, d


def test_catching_up_with_all_outstanding_restarts_the_watch() -> None:
    # 1000 B outstanding, all of it acknowledged once per timeout: 100 B/s, far under the
    # floor, is kept because each catch-up restarts the watch (a peer keeping up with pings) ...
    def caught_up(t: float) -> int:
        return 1000 * int(t // T)

    assert run(caught_up, 10, outstanding=1000)[0].verdict is Verdict.KEEP
    # ... while the same bytes against more outstanding than it ever catches up with are not
    d, _ = run(caught_up, 10, outstanding=1 << 20)
    assert d.verdict is Verdict.WRITE_SLOW, d


def test_a_restart_needs_all_that_waits_then_in_the_node_and_the_kernel() -> None:
    w = StallWatch(T)
    w.start(0, 1000, T0)
    # caught up with the 1000 B of the mark while a sync answer went into the kernel: the
    # next catch-up is all of that, so a drip of 1000 B per check no longer restarts it
    assert w.check(0, 1 << 20, 1000, T0 + w.interval).verdict is Verdict.KEEP
    d, t = Decision(Verdict.KEEP), w.interval
    while d.verdict is Verdict.KEEP and t < 10 * T:
        t += w.interval
        d = w.check(1000, 1 << 20, 1000 * int(t / w.interval), T0 + t)
    assert d.verdict is Verdict.WRITE_SLOW, d


def test_the_watch_ends_once_nothing_waits_in_the_node_or_the_kernel() -> None:
    w = StallWatch(T)
    w.start(0, 5000, T0)
    assert w.check(0, 0, 0, T0 + 1).verdict is Verdict.DONE
    w.start(0, 5000, T0)
    assert w.check(0, 5000, 0, T0 + 1).verdict is Verdict.KEEP  # in the kernel only: watched
    assert w.check(5000, 0, 0, T0 + 2).verdict is Verdict.KEEP  # in the node only: watched
    assert w.check(0, 5000, 0, T0 + T).verdict is Verdict.WRITE_STALL


def test_a_graceful_close_resets_where_an_open_connection_is_cut_and_ends_when_sent() -> None:
    w = StallWatch(T)
    w.start(0, 5000, T0)
    w.close(0, 5000, T0 + 0.6 * T, watching=True)  # keeps the mark: one timeout in all
    assert w.check(5000, 0, 0, T0 + 0.9 * T).verdict is Verdict.KEEP
    assert w.check(5000, 0, 0, T0 + T).verdict is Verdict.RESET and not w.close_wait
    w.close(0, 5000, T0, watching=False)
    # after a close only asyncio's buffer counts: once it is out, the watch ends
    assert w.check(0, 5000, 0, T0 + 1).verdict is Verdict.DONE and not w.close_wait


def test_a_graceful_close_is_reset_after_close_wait_max_timeouts_whatever_the_progress() -> None:
    w = StallWatch(T)
    w.close(0, 1 << 30, T0, watching=False)
    t, acked = 0.0, 0
    while t < 4 * CLOSE_WAIT_MAX * T:
        t += w.interval
        acked += int(2 * MIN_PEER_RATE * w.interval)  # twice the floor: never stalled nor slow
        d = w.check(1 << 20, 0, acked, T0 + t)
        if d.verdict is not Verdict.KEEP:
            break
    assert d.verdict is Verdict.RESET and t == CLOSE_WAIT_MAX * T, (d, t)
