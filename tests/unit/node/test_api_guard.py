"""The REST API's connection limits (apiguard.py) on a real aiohttp server and real loopback
sockets: a client that asks for a large answer and never reads is reset by the write timeout,
one that reads steadily is served in full; connections past the limit evict the stalest (a
slowloris) so honest clients are served; a request header of too many fields is refused. The
victim rule on its own with an injected clock. No timing claims: waits are generous bounds."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from netdiag.node.api import start_api, stop_api
from netdiag.node.apiguard import ApiGuard, ApiLimits, _Conn
from netdiag.node.limits import API_EVICT_AFTER_S, API_MAX_HEADERS
from tests.unit.node.test_api_hardening import FakeView

BIG = 2 << 20  # a /metrics answer far beyond the API's send buffer and the client's window
TCP_ESTABLISHED = 1


class BigView(FakeView):
    def metrics_text(self) -> bytes:
        return b"x" * BIG


@asynccontextmanager
async def api(limits: ApiLimits) -> AsyncIterator[tuple[int, list[str]]]:
    hits: list[str] = []
    runner, port = await start_api(BigView(), "127.0.0.1:0", limits, hits.append)
    try:
        yield port, hits
    finally:
        await stop_api(runner)


def small_window_client(port: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    s.connect(("127.0.0.1", port))
    s.setblocking(False)
    return s


def tcp_state(s: socket.socket) -> int:
    return int(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0])


async def until(cond: Any, within_s: float) -> bool:
    end = time.monotonic() + within_s
    while time.monotonic() < end:
        if cond():
            return True
        await asyncio.sleep(0.05)
    return bool(cond())


async def test_a_client_that_never_reads_a_large_answer_is_reset() -> None:
    # the header timeout is long: only the write timeout can end this connection
    async with api(ApiLimits(header_timeout_s=60.0, write_timeout_s=1.0)) as (port, hits):
        s = small_window_client(port)
        try:
            s.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 3)
            reset = await until(lambda: tcp_state(s) != TCP_ESTABLISHED, 30.0)
            assert reset, "the non-reader's connection is still established"
            assert "api_write_stall" in hits or "api_write_slow" in hits, hits
        finally:
            s.close()


async def test_a_client_reading_steadily_gets_the_whole_answer() -> None:
    # 5 s: the reader shares this loop, so a process stall under load must not look like one
    # of its own (1 s, also TCP_USER_TIMEOUT, was within reach of a CPU burner)
    async with api(ApiLimits(header_timeout_s=60.0, write_timeout_s=5.0)) as (port, hits):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        got = 0
        while chunk := await asyncio.wait_for(r.read(64 << 10), 30):
            got += len(chunk)
            await asyncio.sleep(0.05)  # ~1 MB/s at most: far above the floor, slower than asked
        w.close()
        assert got > BIG and not hits, (got, hits)


async def test_connections_past_the_limit_evict_slowloris_and_honest_clients_are_served() -> None:
    limit = 8
    async with api(ApiLimits(header_timeout_s=60.0, max_connections=limit)) as (port, hits):
        slow = []
        for _ in range(3 * limit):
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"GET /status HTTP/1.1\r\nHost: x\r\nX-Slow: a")
            slow.append((r, w))
        await asyncio.sleep(API_EVICT_AFTER_S * 1.5)
        for _ in range(3):  # honest clients keep getting in: each evicts a stale slowloris
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = await asyncio.wait_for(r.read(), 30)
            w.close()
            assert answer.startswith(b"HTTP/1.1 200"), answer[:100]

        async def closed(r: asyncio.StreamReader) -> bool:
            """Ended: the node closed or reset it. Still open after the wait: held."""
            try:
                return await asyncio.wait_for(r.read(), 3) == b""
            except ConnectionError:
                return True
            except TimeoutError:
                return False

        ended = await asyncio.gather(*(closed(r) for r, _ in slow))
        for _, w in slow:
            w.close()
        assert ended.count(False) <= limit, f"{ended.count(False)} slow ones held, limit {limit}"
        # each slow one past the limit was refused or evicted one (which, depends on how fast
        # they connected: not a timing claim); an honest one evicted a stale one
        cuts = hits.count("api_refused") + hits.count("api_evicted")
        assert cuts >= 2 * limit and "api_evicted" in hits, hits


async def test_a_handler_waiting_for_a_dribbled_body_is_evicted_for_an_honest_client() -> None:
    """POST /tx reads its body in the handler: connections dribbling theirs must not count as
    busy, or they hold every slot out of reach of eviction."""
    limit = 2
    async with api(ApiLimits(header_timeout_s=60.0, max_connections=limit)) as (port, hits):
        dribblers = []
        for _ in range(limit):
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(
                b"POST /tx HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 1000\r\n\r\n{"
            )
            dribblers.append((r, w))
        await asyncio.sleep(API_EVICT_AFTER_S * 1.5)
        try:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            try:
                answer = await asyncio.wait_for(r.read(), 30)
            except ConnectionError:
                answer = b""
            w.close()
            assert answer.startswith(b"HTTP/1.1 200"), (answer[:100], hits)
            assert "api_evicted" in hits and "api_refused" not in hits, hits
        finally:
            for _, w in dribblers:
                w.close()


async def test_a_header_of_too_many_fields_is_refused() -> None:
    async with api(ApiLimits()) as (port, _):
        fields = b"".join(b"X-F%d: a\r\n" % i for i in range(API_MAX_HEADERS + 8))
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"GET /status HTTP/1.1\r\nHost: x\r\n" + fields + b"Connection: close\r\n\r\n")
        answer = await asyncio.wait_for(r.read(), 30)
        w.close()
        assert answer.split(b" ", 2)[1] == b"400", answer[:100]


class FakeTransport:
    def __init__(self, ip: str) -> None:
        self.ip = ip
        self.aborted = False

    def get_extra_info(self, name: str) -> Any:
        return (self.ip, 1) if name == "peername" else None

    def abort(self) -> None:
        self.aborted = True


def test_the_victim_is_stale_not_busy_and_from_the_address_holding_most() -> None:
    now = [100.0]
    guard = ApiGuard(ApiLimits(max_connections=4), lambda limit: None, clock=lambda: now[0])

    def add(key: str, ip: str, active_at: float, busy: int = 0) -> str:
        guard.conns[key] = _Conn(FakeTransport(ip), ip, active_at, busy)  # type: ignore[arg-type]
        return key

    add("fresh", "10.0.0.9", now[0] - API_EVICT_AFTER_S / 2)  # honest, just arrived
    add("busy", "10.0.0.2", now[0] - 50, busy=1)  # in a handler (a POST /tx waiting)
    add("lone-old", "10.0.0.3", now[0] - 40)
    add("crowd-a", "10.0.0.2", now[0] - 20)
    add("crowd-b", "10.0.0.2", now[0] - 30)
    assert guard.victim(exclude="new") == "crowd-b"
    del guard.conns["crowd-a"], guard.conns["crowd-b"]
    assert guard.victim(exclude="new") == "lone-old"
    del guard.conns["lone-old"]
    add("new", "10.0.0.9", now[0])
    assert guard.victim(exclude="new") == "fresh"  # none stale: the one not busy, not refused
    del guard.conns["fresh"]
    assert guard.victim(exclude="new") is None  # the rest are in a handler: refuse the newcomer


def test_an_address_holding_over_half_the_slots_yields_one_to_another_address() -> None:
    now = [100.0]
    guard = ApiGuard(ApiLimits(max_connections=4), lambda limit: None, clock=lambda: now[0])
    for i in range(4):  # one address churns: all its connections fresh, none stale yet
        ip = "10.0.0.2"
        guard.conns[f"a{i}"] = _Conn(FakeTransport(ip), ip, now[0] - i / 10)  # type: ignore[arg-type]
    guard.conns["mine"] = _Conn(FakeTransport("10.0.0.7"), "10.0.0.7", now[0])  # type: ignore[arg-type]
    assert guard.victim(exclude="mine") == "a3"  # its oldest


def test_keep_alive_clients_asking_all_the_time_yield_their_longest_held_slot() -> None:
    """Every client on one address (127.0.0.1), none idle for API_EVICT_AFTER_S (a request
    every 0.3 s): the newcomer is not refused, the connection held open longest goes."""
    now = [100.0]
    guard = ApiGuard(ApiLimits(max_connections=4), lambda limit: None, clock=lambda: now[0])
    ip = "127.0.0.1"
    for i, held_since in enumerate([90.0, 60.0, 80.0, 70.0]):
        conn = _Conn(FakeTransport(ip), ip, now[0] - 0.1 * i, opened_at=held_since)  # type: ignore[arg-type]
        guard.conns[f"k{i}"] = conn
    guard.conns["new"] = _Conn(FakeTransport(ip), ip, now[0], opened_at=now[0])  # type: ignore[arg-type]
    assert guard.victim(exclude="new") == "k1"
    guard.conns["k1"].busy = 1  # in a handler: kept
    assert guard.victim(exclude="new") == "k3"


async def test_keep_alive_clients_asking_all_the_time_do_not_lock_honest_clients_out() -> None:
    limit = 4
    async with api(ApiLimits(header_timeout_s=60.0, max_connections=limit)) as (port, hits):
        stop = asyncio.Event()

        async def keep_asking() -> None:
            while not stop.is_set():
                try:
                    r, w = await asyncio.open_connection("127.0.0.1", port)
                    while not stop.is_set():
                        w.write(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
                        await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 30)
                        await asyncio.sleep(0.3)
                    w.close()
                except (ConnectionError, asyncio.IncompleteReadError):
                    await asyncio.sleep(0.3)

        askers = [asyncio.create_task(keep_asking()) for _ in range(limit)]
        try:
            await asyncio.sleep(API_EVICT_AFTER_S * 1.5)
            served = 0
            for _ in range(5):
                try:
                    r, w = await asyncio.open_connection("127.0.0.1", port)
                    w.write(b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    answer = await asyncio.wait_for(r.read(), 30)
                    w.close()
                    served += answer.startswith(b"HTTP/1.1 200")
                except ConnectionError:
                    pass
            assert served == 5, (served, hits)
        finally:
            stop.set()
            await asyncio.gather(*askers, return_exceptions=True)


def test_the_write_timeout_counts_acknowledged_output_not_new_requests(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client that keeps sending requests behind output it never reads is still cut."""
    from netdiag.node import apiguard

    now = [0.0]
    hits: list[str] = []
    guard = ApiGuard(ApiLimits(write_timeout_s=10.0), hits.append, clock=lambda: now[0])
    monkeypatch.setattr(apiguard, "queued_bytes", lambda sock: 100_000)  # never read
    monkeypatch.setattr(apiguard, "tcp_bytes_acked", lambda sock: 5_000)  # nothing more acked
    t = FakeTransport("10.0.0.2")
    t.get_write_buffer_size = lambda: 0  # type: ignore[attr-defined]
    t.is_closing = lambda: False  # type: ignore[attr-defined]
    conn = _Conn(t, "10.0.0.2", 0.0)  # type: ignore[arg-type]
    guard.conns["c"] = conn
    for step in range(1, 12):
        now[0] = float(step)
        conn.active_at = now[0]  # a request started (what the middleware records)
        guard.check_all()
    assert hits == ["api_write_stall"] and t.aborted, hits


async def test_the_sweep_survives_an_exception_in_a_check(
    capsys: pytest.CaptureFixture[str],
) -> None:
    guard = ApiGuard(ApiLimits(write_timeout_s=0.2), lambda limit: None)
    calls: list[int] = []

    def check_all() -> None:
        calls.append(1)
        raise RuntimeError("boom")

    guard.check_all = check_all  # type: ignore[method-assign]
    guard._sweeper = asyncio.get_running_loop().create_task(guard._sweep())
    try:
        assert await until(lambda: len(calls) >= 3, 30.0), calls
        assert not guard._sweeper.done()
    finally:
        guard.stop()
    assert capsys.readouterr().err.count("api_guard_error") == 1


def test_a_reader_whose_output_moved_since_the_last_sweep_is_not_the_victim(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sweep reads progress every check_s: at the limit, the victim rule reads it again for
    a connection whose output waits, so a steady reader is not taken for an idle one."""
    from netdiag.node import apiguard

    now = [100.0]
    guard = ApiGuard(ApiLimits(max_connections=2), lambda limit: None, clock=lambda: now[0])
    monkeypatch.setattr(apiguard, "tcp_bytes_acked", lambda sock: 50_000)  # it kept reading
    ip = "127.0.0.1"
    reader = _Conn(FakeTransport(ip), ip, now[0] - 1.5, watch_at=now[0] - 5, acked=10_000)  # type: ignore[arg-type]
    guard.conns["reader"] = reader
    guard.conns["idle"] = _Conn(FakeTransport(ip), ip, now[0] - 1.2)  # type: ignore[arg-type]
    guard.conns["new"] = _Conn(FakeTransport(ip), ip, now[0])  # type: ignore[arg-type]
    assert guard.victim(exclude="new") == "idle"
    assert reader.active_at == now[0] and reader.acked == 50_000


def test_a_client_keeping_up_with_a_trickle_of_output_is_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Output keeps waiting (a little at every check) but the client takes all of it each
    time: stallwatch's catch-up restart keeps it, though its average is under MIN_PEER_RATE."""
    from netdiag.node import apiguard

    now = [0.0]
    hits: list[str] = []
    guard = ApiGuard(ApiLimits(write_timeout_s=10.0), hits.append, clock=lambda: now[0])
    acked = [0]
    monkeypatch.setattr(apiguard, "queued_bytes", lambda sock: 1_000)  # a new answer waits
    monkeypatch.setattr(apiguard, "tcp_bytes_acked", lambda sock: acked[0])
    t = FakeTransport("10.0.0.2")
    t.get_write_buffer_size = lambda: 0  # type: ignore[attr-defined]
    t.is_closing = lambda: False  # type: ignore[attr-defined]
    guard.conns["c"] = _Conn(t, "10.0.0.2", 0.0)  # type: ignore[arg-type]
    for step in range(1, 40):
        now[0] = float(step)
        acked[0] += 1_000  # all that waited at the last check
        guard.check_all()
    assert not hits and not t.aborted, hits
