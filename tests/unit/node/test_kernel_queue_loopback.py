"""The kernel-queue stall cut over real loopback TCP (issue 17): a peer asks for less than the
kernel's send buffer can take, then never reads; nothing ever waits in the node's own buffers,
everything waits unacknowledged in the kernel's send queue. Cut by the write-stall check (not
by the idle timeout, set far out here), with a reset the peer sees; an honest slow reader whose
output also waits only in the kernel is kept for several timeouts, and cut once it stops. The
stall timeout is shortened through the node's config; behaviour and order only (generous
bounds, a loaded host is slow). Fails on the code before the fix: the non-reader is never cut
within the bound."""

from __future__ import annotations

import asyncio

from netdiag.node.messages import Blocks
from netdiag.node.sockets import queued_bytes
from netdiag.node.transport import Connection
from tests.unit.node import test_write_stall_loopback as wl

NET, GEN = "nd-test", b"\x03" * 32
STALL_S = wl.STALL_S  # the node side (wl.acceptor) uses the same
ANSWER = Blocks(7, [bytes(16_000)] * 8)  # a 128 KB sync answer: lifts the unsent bound
ASKED = 4  # the non-reader's one small ask: 512 KB, which the kernel's send buffer takes
SLOW_QUEUE = 256 << 10  # the slow reader's kernel queue is topped up to this, never beyond


async def scenario() -> tuple[list[tuple[str, str]], dict[str, str], dict[str, int]]:
    handler = wl.Handler()
    conns: dict[str, Connection] = {}
    counts = {"deaf_held_max": 0, "deaf_queued_max": 0, "slow_held_max": 0, "slow_topups": 0}
    accept = wl.acceptor(handler, conns)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    slow, deaf = wl.Peer(), wl.Peer()
    await slow.connect(port)
    await deaf.connect(port)
    loop = asyncio.get_running_loop()
    for _ in range(100):
        if slow.port in conns and deaf.port in conns:
            break
        await asyncio.sleep(0.05)
    d, s = conns[deaf.port], conns[slow.port]

    async def serve() -> None:
        """The non-reader's small ask, once; the slow reader's queue in the kernel topped up
        with one answer whenever it falls under SLOW_QUEUE and nothing waits in the node."""
        for _ in range(ASKED):
            d.send(ANSWER)
        while True:
            for name, c in (("deaf", d), ("slow", s)):
                if c.is_open:
                    counts[f"{name}_held_max"] = max(counts[f"{name}_held_max"], c.write_held)
            if d.is_open:
                q = queued_bytes(d.writer.get_extra_info("socket"))
                counts["deaf_queued_max"] = max(counts["deaf_queued_max"], q)
            slow_queue = queued_bytes(s.writer.get_extra_info("socket")) if s.is_open else 0
            if s.is_open and s.write_held == 0 and slow_queue < SLOW_QUEUE:
                s.send(ANSWER)
                counts["slow_topups"] += 1
            await asyncio.sleep(0.02)

    tasks = [loop.create_task(slow.read_slowly()), loop.create_task(serve())]
    began = loop.time()
    marks: dict[str, str] = {}
    try:
        while not any(p == deaf.port for p, _ in handler.events):
            assert loop.time() - began < 20 * STALL_S, "a non-reader with output in the kernel kept"
            await asyncio.sleep(0.1)
        marks["deaf_reason"] = d.close_reason or ""
        marks["deaf_cut_with_slow"] = "open" if s.is_open else "closed"
        sock = deaf.w.get_extra_info("socket")
        cut_at = loop.time()
        while wl.tcp_state(sock) == wl.TCP_ESTABLISHED and loop.time() - cut_at < 20:
            await asyncio.sleep(0.05)
        established = wl.tcp_state(sock) == wl.TCP_ESTABLISHED
        marks["deaf_socket"] = "established" if established else "reset"
        while loop.time() - began < 3 * STALL_S:
            await asyncio.sleep(0.1)
        marks["slow_after_3_timeouts"] = "open" if s.is_open else "closed"
        counts["slow_got"] = slow.got
        slow.reading = False  # now it stops reading: cut
        handler.events.append((slow.port, "stopped_reading"))
        stopped = loop.time()
        while s.is_open:
            assert loop.time() - stopped < 20 * STALL_S, "a reader that stopped was not cut"
            await asyncio.sleep(0.1)
    finally:
        await wl.teardown(tasks, conns, (slow, deaf), server)
    names = {slow.port: "slow", deaf.port: "deaf"}
    return [(names[p], what) for p, what in handler.events], marks, counts


def test_a_non_reader_whose_output_waits_only_in_the_kernel_is_cut_a_slow_reader_kept() -> None:
    wl.require_bytes_acked()
    events, marks, counts = asyncio.run(scenario())
    # the case under test: nothing ever waited in the node for the non-reader, ~all in the kernel
    assert counts["deaf_held_max"] == 0, counts
    assert counts["deaf_queued_max"] > ASKED * 100_000, counts
    assert counts["slow_held_max"] == 0 and counts["slow_topups"] > 1, counts
    assert "kernel's queue" in marks["deaf_reason"], marks
    assert marks["deaf_cut_with_slow"] == "open"
    assert marks["deaf_socket"] == "reset"
    assert marks["slow_after_3_timeouts"] == "open", events
    assert counts["slow_got"] > 0
    assert events == [("deaf", "write_stall"), ("slow", "stopped_reading"), ("slow", "write_stall")]
