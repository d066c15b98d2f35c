"""The stall check wants a minimum of progress per stall timeout (review): any acknowledged
byte used to reset its clock, so a reader taking about a segment per timeout (~160 B/s) kept
up to a send buffer in the node's kernel and the write cap in the node, indefinitely. Now the
peer must acknowledge MIN_PEER_RATE x the timeout (or all that was outstanding, if less) per
timeout. Over the fake transport and socket of test_write_stall (fake progress), on an
injected clock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from netdiag.node.limits import MIN_PEER_RATE
from netdiag.node.messages import Blocks, Ping
from tests.unit.node import test_write_stall as ws

STEP = 0.25  # of a stall timeout: the watch's own check interval


pytestmark = pytest.mark.usefixtures("fake_kernel_queue")  # conftest


def drip(rate: float, timeouts: float) -> tuple[bool, list[str]]:
    """A reader acknowledging ``rate`` B/s of 4 MiB waiting in the kernel; is it still open
    after ``timeouts`` stall timeouts, and the limits hit."""
    still, limits, _at = acks(lambda t: rate * t, timeouts)
    return still, limits


def acks(
    acked_by: Callable[[float], float], timeouts: float
) -> tuple[bool, list[str], float | None]:
    """A reader that has acknowledged ``acked_by(t)`` bytes t seconds in, of 4 MiB waiting in
    the kernel: still open after ``timeouts`` stall timeouts, the limits hit, and when (in
    stall timeouts) it was cut."""

    async def main() -> tuple[bool, list[str], float | None]:
        clock = ws.Clock()
        conn, transport, handler, task = await ws.open_conn(clock=clock)
        sock = transport.sock
        assert sock is not None
        transport.reading = False
        transport.room = 8 << 20
        conn.send(Blocks(1, [bytes(4 << 20)]))  # all in the kernel: nothing waits in the node
        base, start, cut_at = sock.acked, clock.now, None
        for i in range(int(timeouts / STEP)):
            clock.now += STEP * ws.STALL_S
            transport.ack(int(acked_by(clock.now - start)) - (sock.acked - base))
            conn.check_stall()
            if not conn.is_open:
                cut_at = (i + 1) * STEP
                break
        still = conn.is_open
        if still:
            conn.close("test over", flush=False, abort=True)
        await ws.ended(task)
        return still, handler.limits, cut_at

    return asyncio.run(main())


def test_a_reader_dripping_a_segment_per_check_is_cut_as_slow_not_stalled() -> None:
    still, limits, at = acks(lambda t: 160.0 * t, 10)
    assert not still and limits == ["write_slow"]  # moving: not scored (policy)
    assert at is not None and 1 <= at <= 2.5, at  # about one timeout of slack past the first


def test_a_reader_acknowledging_nothing_is_cut_as_stalled_at_one_timeout() -> None:
    still, limits, at = acks(lambda t: 0.0, 10)
    assert not still and limits == ["write_stall"] and at == 1.0, (limits, at)


def test_a_burst_then_a_pause_of_a_timeout_is_kept_on_its_average() -> None:
    # review 2: MIN_PEER_RATE x timeout in the first check interval, then nothing until the
    # next byte one timeout later (an RTO backoff on a lossy link, a brief zero window), then
    # the floor rate: a quota per timeout window cut it; its average since the start is fine
    burst_s = STEP * ws.STALL_S
    burst = MIN_PEER_RATE * ws.STALL_S

    def acked(t: float) -> float:
        if t <= burst_s:
            return burst * t / burst_s
        if t < burst_s + ws.STALL_S:
            return burst
        return burst + MIN_PEER_RATE * (t - burst_s - ws.STALL_S + 1)

    still, limits, _at = acks(acked, 10)
    assert still and limits == [], limits


def test_a_reader_at_the_floor_rate_or_faster_is_kept() -> None:
    for rate in (MIN_PEER_RATE, 2 * MIN_PEER_RATE):
        still, limits = drip(float(rate), 10)
        assert still and limits == [], rate


def test_a_peer_keeping_up_with_a_trickle_of_output_is_kept() -> None:
    # Little outstanding (a ping now and then): acknowledging all of it is enough progress.
    async def main() -> None:
        clock = ws.Clock()
        conn, transport, handler, task = await ws.open_conn(clock=clock)
        assert transport.sock is not None
        transport.reading = False
        transport.room = 1 << 20
        for i in range(40):  # 10 stall timeouts
            conn.send(Ping(i))
            clock.now += STEP * ws.STALL_S
            if i % 4 == 3:  # acknowledges what waits once per stall timeout, ~1 ping behind
                transport.ack(transport.sock.inflight - 10)
            conn.check_stall()
            assert conn.is_open, conn.close_reason
        assert handler.limits == []
        conn.close("test over", flush=False, abort=True)
        await ws.ended(task)

    asyncio.run(main())
