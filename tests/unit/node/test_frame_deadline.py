"""Idle is no byte for ``idle_timeout_s``; a frame in flight has its own deadline from its
first byte: idle_timeout_s + its declared length / MIN_PEER_RATE (review of abd0576, which made
idle "no complete frame" and so cut every honest sender of a large frame slower than
~300 kbit/s). The trickler still ends (its frame never completes); an honest slow sender of a
2 MiB frame at ~300 kbit/s is kept. On an injected clock (the connection's decisions
``note_frames`` / ``read_deadline`` at given times), plus one short real run of the trickler."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from netdiag.node.limits import MIN_PEER_RATE
from netdiag.node.messages import Blocks
from netdiag.node.protocol import encode_frame
from netdiag.node.readdeadline import ReadDeadline
from netdiag.node.transport import Connection
from tests.unit.node import test_write_stall as ws

IDLE_S = 60.0


def feed(conn: Connection, data: bytes, now: float) -> None:
    """What the read loop does with bytes that arrived at ``now`` (the fake clock)."""
    conn.last_recv = now
    conn.proto.receive_data(data)
    conn.note_frames(now)


def cut_at(conn: Connection, data: bytes, rate: float, chunk: int, start: float) -> float | None:
    """Send ``data`` at ``rate`` B/s in ``chunk``-byte reads from ``start``; the fake time at
    which the connection would cut the peer, or None when the frame completes first."""
    now = start
    for i in range(0, len(data), chunk):
        deadline, _ = conn.read_deadline(now)
        now += chunk / rate
        if now > deadline:
            return deadline
        feed(conn, data[i : i + chunk], now)
    return None


def on_conn(body: Callable[[Connection, ws.Handler], None]) -> None:
    """Run ``body`` on an open connection over test_write_stall's fake (idle_timeout_s =
    IDLE_S), then close it; ``body`` feeds the decoder at times of its own without yielding,
    so the read loop sees none of it."""

    async def main() -> None:
        conn, _transport, handler, task = await ws.open_conn()
        conn.idle_timeout_s = IDLE_S
        body(conn, handler)
        conn.close("test over")
        await ws.ended(task)

    asyncio.run(main())


def test_an_honest_slow_sender_of_a_2_mib_frame_at_300_kbit_s_is_kept() -> None:
    def body(conn: Connection, handler: ws.Handler) -> None:
        data = encode_frame(Blocks(9, [bytes(2 << 20)]))
        t0 = 1000.0
        feed(conn, b"", t0)  # its last complete frame (a pong) just before
        # ~15 s since the last complete frame before the answer starts (the ping gap) ...
        start = t0 + 15.0
        assert cut_at(conn, data, 300e3 / 8, 16 << 10, start) is None  # ... 2 MiB in ~56 s
        assert conn.frame_started is None and conn.proto.decoder.buffered == 0
        # slower than the floor: the same frame at a quarter of MIN_PEER_RATE is cut, at its
        # frame deadline (idle alone would never fire: bytes keep coming)
        assert cut_at(conn, data, MIN_PEER_RATE / 4, 16 << 10, start + 100) is not None
        assert handler.limits == []  # nothing was cut for real: the loop saw none of it

    on_conn(body)


def test_a_trickler_is_cut_at_its_frame_deadline_though_bytes_keep_coming() -> None:
    def body(conn: Connection, _handler: ws.Handler) -> None:
        data = encode_frame(Blocks(9, [bytes(4 << 20)]))
        now = 0.0
        feed(conn, data[:-500], now)  # most of a 4 MiB frame at once ...
        started = now
        for b in data[-500:-1]:  # ... then a byte every idle/2, never the last one
            deadline, what = conn.read_deadline(now)
            if now + IDLE_S / 2 > deadline:
                break
            now += IDLE_S / 2
            feed(conn, bytes([b]), now)
        else:
            raise AssertionError("a trickled frame kept the peer")
        assert what == "frame" and deadline == conn.frame_started + IDLE_S + (  # type: ignore[operator]
            conn.proto.decoder.pending_len / MIN_PEER_RATE
        )
        assert conn.frame_started == started  # the frame's first byte, not its last
        assert deadline - started < 20 * IDLE_S

    on_conn(body)


def test_a_new_frame_after_a_complete_one_gets_its_own_deadline() -> None:
    def body(conn: Connection, _handler: ws.Handler) -> None:
        one, two = encode_frame(Blocks(1, [bytes(100)])), encode_frame(Blocks(2, [bytes(100)]))
        feed(conn, one + two[:10], 5.0)  # the first completes, the second starts in this read
        assert conn.frame_started == 5.0
        feed(conn, two[10:20], 30.0)
        assert conn.frame_started == 5.0  # same frame
        feed(conn, two[20:] + one[:3], 40.0)  # completes; a third starts (prefix incomplete)
        assert conn.frame_started == 40.0
        assert conn.read_deadline(40.0) == (40.0 + IDLE_S, "idle")  # no declared length yet

    on_conn(body)


def test_read_deadline_alone_is_idle_until_a_frame_is_in_flight_then_the_earlier() -> None:
    d = ReadDeadline()  # sans I/O: the decoder's counts and the times are the test's
    assert d.next(10.0, IDLE_S, 0) == (10.0 + IDLE_S, "idle")
    d.note_frames(buffered=100, completed=3, now=10.0)  # a frame starts
    d.note_frames(buffered=200, completed=3, now=20.0)  # the same frame goes on
    big = 4 << 20
    assert d.frame_started == 10.0
    assert d.next(20.0, IDLE_S, big) == (20.0 + IDLE_S, "idle")  # a large frame: idle first
    # ... until bytes keep coming: then the frame's own deadline from its first byte
    assert d.next(600.0, IDLE_S, big) == (10.0 + IDLE_S + big / MIN_PEER_RATE, "frame")
    d.note_frames(buffered=5, completed=4, now=30.0)  # it completed, another started
    assert d.frame_started == 30.0
    d.note_frames(buffered=0, completed=5, now=31.0)  # nothing in flight
    assert d.frame_started is None and d.next(31.0, IDLE_S, 0) == (31.0 + IDLE_S, "idle")
