"""A peer that trickles one frame a byte at a time is cut (found reviewing issue 17's other
paths): the idle timeout counts any byte as activity, so a peer could send most of a frame
(up to max_frame_bytes, 4 MiB, buffered in the node's decoder) and then one byte per idle
timeout, holding that memory and its slot for ever. A frame in flight now has a deadline
(transport.read_deadline; test_frame_deadline). A peer that keeps sending complete frames is
kept. Over the fake transport of test_write_stall with short real timeouts; only "it ends" and
"still open while frames arrive 20 times faster than the timeout" are asserted."""

from __future__ import annotations

import asyncio

import pytest

import netdiag.node.readdeadline as deadline_mod
from netdiag.node.messages import Blocks, Ping
from netdiag.node.protocol import encode_frame
from tests.unit.node import test_write_stall as ws


def test_a_peer_trickling_a_frame_a_byte_at_a_time_is_cut_by_the_frame_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    idle_s = 0.5
    # the frame deadline is idle + declared length / MIN_PEER_RATE: a fast floor here keeps the
    # real run short (test_frame_deadline checks the real floor on an injected clock)
    monkeypatch.setattr(deadline_mod, "MIN_PEER_RATE", 1e9)

    async def main() -> None:
        conn, transport, handler, task = await ws.open_conn()
        conn.idle_timeout_s = idle_s
        data = encode_frame(Blocks(9, [bytes(200_000)]))
        transport.reader.feed_data(data[:-500])  # most of a 200 KB frame at once ...
        loop = asyncio.get_running_loop()
        began = loop.time()
        for b in data[-500:-1]:  # ... then a byte every idle/5, never the last one
            # cut: the run task may still wait on wait_closed (not done) while the reader has
            # had its EOF, and feed_data after feed_eof raises
            if task.done() or conn.close_reason is not None or transport.reader.at_eof():
                break
            transport.reader.feed_data(bytes([b]))
            await asyncio.sleep(idle_s / 5)
            assert loop.time() - began < 20 * idle_s, "a trickled frame kept the peer"
        assert conn.close_reason is not None, "the trickling peer was never cut"
        assert await ws.ended(task), "the cut connection's task never ended"
        assert handler.limits == ["frame_timeout"], handler.limits
        assert "never completed" in (conn.close_reason or ""), conn.close_reason

    asyncio.run(main())


def test_a_peer_sending_complete_frames_is_not_idle() -> None:
    idle_s = 2.0

    async def main() -> None:
        conn, transport, handler, task = await ws.open_conn()
        conn.idle_timeout_s = idle_s
        ping = encode_frame(Ping(1))
        loop = asyncio.get_running_loop()
        began = loop.time()
        while loop.time() - began < 1.5 * idle_s:
            transport.reader.feed_data(ping)
            await asyncio.sleep(idle_s / 20)
        assert conn.is_open and not task.done(), conn.close_reason
        assert handler.limits == []
        conn.close("test over")
        await ws.ended(task)

    asyncio.run(main())
