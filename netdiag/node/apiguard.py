"""Connection limits of the REST API: what aiohttp does not bound on its own.

aiohttp closes a connection that has not sent a whole request header within its keep-alive
timer (``api_header_timeout_s``, from accept and from the previous response), but nothing else:
a client that asks and never reads held its connection, the response in asyncio's buffer and up
to a send buffer in the kernel (4 MiB at ``tcp_wmem`` max) for ever — a request in progress has
no timer at all, and the keep-alive close that follows a written response is graceful, so the
kernel kept what the client never read as an orphan; and the number of connections had no
limit but the process's file descriptors, which the P2P side shares.

``GuardedServer`` is aiohttp's ``Server`` with, per connection (hypercorn/nginx style):

- a write timeout (``api_write_timeout_s``): while output waits for the client (in asyncio's
  buffer or the kernel's send queue), the client must acknowledge some of it within the timeout
  and, on average since the output started waiting, at least ``MIN_PEER_RATE`` with one timeout
  of slack, unless it catches up with all that waited (the P2P rules: a stallwatch.StallWatch
  per connection); else the socket is reset (``SO_LINGER`` 0: the kernel drops its queue).
  Checked on a timer, ``check_s``; ``TCP_USER_TIMEOUT`` (the timeout + ``backstop_s``, so
  the guard's counted reset comes first) lets the kernel abort an orphan the client never
  reads after a close;
- a small send buffer (``API_SNDBUF``): the kernel holds at most that much per connection;
- a connection limit (``api_max_connections``): a connection past it evicts the connection not
  in a handler (or in one still waiting for its request body) that has gone longest without
  progress (waiting for its request header, or its output unacknowledged), at least
  ``API_EVICT_AFTER_S``, from the address holding the most — or, if none is that stale, the
  longest held of those not in a handler, from the address holding the most (nginx reuses its
  keep-alive connections so: clients that keep asking cannot hold every slot); the newcomer is
  reset only when all the others are in a handler. Slowloris connections and stalled readers
  cannot starve honest clients, and the API holds at most ``api_max_connections`` file
  descriptors.

Every cut is counted in ``limit_hits{limit}``: ``api_write_stall``, ``api_write_slow``,
``api_evicted``, ``api_refused``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from netdiag.node.limits import API_EVICT_AFTER_S, API_SNDBUF
from netdiag.node.sockets import (
    bound_unacknowledged,
    queued_bytes,
    reset_transport,
    tcp_bytes_acked,
)
from netdiag.node.stallwatch import StallWatch, Verdict

OnLimit = Callable[[str], None]


@dataclass
class ApiLimits:
    header_timeout_s: float = 10.0  # a request header (or POST body) not complete: closed
    write_timeout_s: float = 10.0  # output unacknowledged (or under the floor): reset; 0 off
    max_connections: int = 64  # connections at once; past it the stalest is evicted


@dataclass
class _Conn:
    transport: asyncio.Transport
    ip: str
    active_at: float  # accept, the last request's start, or the last output acknowledged
    busy: int = 0  # requests in a handler (not evictable meanwhile, once their body is in)
    request: Any = None  # the request in a handler (aiohttp runs one at a time per connection)
    opened_at: float = 0.0  # accept
    watch_at: float | None = None  # when output started waiting (None: nothing waits)
    acked: int = 0  # acknowledged at the last check
    watch: StallWatch | None = None  # the write timeout's rules (stallwatch.py)


class ApiGuard:
    """The limits' state and decisions: the connections, their progress, whom to cut."""

    def __init__(
        self, limits: ApiLimits, on_limit: OnLimit, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limits = limits
        self.on_limit = on_limit
        self.clock = clock
        self.conns: dict[object, _Conn] = {}  # by aiohttp's RequestHandler
        self.check_s = max(0.05, min(1.0, limits.write_timeout_s / 4 or 1.0))
        self.backstop_s = 2 * self.check_s + 2.0  # TCP_USER_TIMEOUT past the write timeout
        self._sweeper: asyncio.Task[None] | None = None

    def opened(self, handler: object, transport: asyncio.Transport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, API_SNDBUF)
        # the kernel's abort is the backstop (an orphan after a keep-alive close, a stalled
        # loop), later than the guard's own reset: aborted first, the client saw no reset and
        # no cut was counted (seen once under load as "0 of 32 ended, 0 bytes held")
        bound_unacknowledged(sock, self.limits.write_timeout_s + self.backstop_s)
        peer = transport.get_extra_info("peername") or ("?", 0)
        now = self.clock()
        self.conns[handler] = _Conn(transport, str(peer[0]), now, opened_at=now)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        if len(self.conns) > self.limits.max_connections:
            victim = self.victim(exclude=handler)
            if victim is not None:
                self.on_limit("api_evicted")
                self._drop(victim)
            else:  # after aiohttp has started its task for it (it asserts on a lost one)
                self.on_limit("api_refused")
                asyncio.get_running_loop().call_soon(self._drop, handler)

    def closed(self, handler: object) -> None:
        self.conns.pop(handler, None)

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[Any]]
    ) -> Any:
        """A connection in a handler is not evicted once its request's body is in (``held``);
        a request is progress."""
        conn = self.conns.get(request.protocol)
        if conn is None:
            return await handler(request)
        conn.busy += 1
        conn.request = request
        conn.active_at = self.clock()
        try:
            return await handler(request)
        finally:
            conn.busy -= 1
            conn.request = None
            conn.active_at = self.clock()

    @staticmethod
    def held(conn: _Conn) -> bool:
        """In a handler with the whole request in: not evictable. A handler waiting for its
        client's body (POST /tx reads it for up to the header timeout) is waiting on the
        client, like a slow header: a dribbled body must not hold a slot out of reach."""
        if conn.busy == 0:
            return False
        return conn.request is None or conn.request.content.is_eof()

    def _drop(self, handler: object) -> None:
        conn = self.conns.pop(handler, None)
        if conn is not None:
            reset_transport(conn.transport)

    def check(self, handler: object, conn: _Conn, now: float) -> None:
        """The write timeout, for one connection: the P2P side's rules (stallwatch.StallWatch,
        its catch-up restart included) on asyncio's buffer and the kernel's queue."""
        timeout = self.limits.write_timeout_s
        if timeout <= 0:
            return
        sock = conn.transport.get_extra_info("socket")
        held = conn.transport.get_write_buffer_size()
        # the fd is closed or about to be: the kernel's timeout bounds the rest
        closing = conn.transport.is_closing() and held == 0
        kernel = 0 if closing else queued_bytes(sock)
        if conn.watch_at is None and not held and not kernel:
            return  # nothing asked, or caught up: the next output starts a watch
        acked = tcp_bytes_acked(sock) or 0
        if conn.watch is None:
            conn.watch = StallWatch(timeout)
        if conn.watch_at is None:
            conn.watch_at, conn.acked = now, acked
            conn.watch.start(acked, held + kernel, now)
            return
        if acked > conn.acked:
            conn.acked, conn.active_at = acked, now
        # only acknowledged output counts here: a new request (pipelined behind output the
        # client does not read) is not progress on what waits
        verdict = conn.watch.check(held, kernel, acked, now).verdict
        if verdict is Verdict.DONE:
            conn.watch_at = None
        elif verdict is Verdict.WRITE_STALL:
            self.on_limit("api_write_stall")
            self._drop(handler)
        elif verdict is Verdict.WRITE_SLOW:
            self.on_limit("api_write_slow")
            self._drop(handler)

    @staticmethod
    def refresh(conn: _Conn, now: float) -> None:
        """Progress since the last sweep, for a connection whose output waits: the sweep reads
        it only every ``check_s`` (up to API_EVICT_AFTER_S), so a client reading steadily could
        look idle just before one and be chosen over an attacker's newer connections."""
        if conn.watch_at is None:
            return
        acked = tcp_bytes_acked(conn.transport.get_extra_info("socket"))
        if acked is not None and acked > conn.acked:
            conn.acked, conn.active_at = acked, now

    def check_all(self) -> None:
        now = self.clock()
        for handler, conn in list(self.conns.items()):
            self.check(handler, conn, now)

    async def _sweep(self) -> None:
        logged = False
        while True:
            await asyncio.sleep(self.check_s)
            try:
                self.check_all()
            except Exception as e:  # a bug must not turn the write timeout off for good
                if not logged:  # once: it would repeat every check
                    logged = True
                    sys.stderr.write(
                        json.dumps({"event": "api_guard_error", "msg": f"check: {e!r}"}) + "\n"
                    )

    def victim(self, exclude: object) -> object | None:
        """The connection to evict for the newcomer ``exclude``: one not ``held``, without
        progress (a request, or output acknowledged) for at least API_EVICT_AFTER_S — of those,
        from the address holding the most connections, the one without progress longest; if
        there is none, the one not held open longest, from the address holding the most: clients
        that keep asking (keep-alive, a request every fraction of a second, all from 127.0.0.1)
        must not lock every newcomer out. None (refused) only when all the others are held."""
        now = self.clock()
        floor = now - API_EVICT_AFTER_S
        per_ip: dict[str, int] = {}
        for c in self.conns.values():
            per_ip[c.ip] = per_ip.get(c.ip, 0) + 1
        free = [(h, c) for h, c in self.conns.items() if h is not exclude and not self.held(c)]
        for _, c in free:
            if c.active_at <= floor:
                self.refresh(c, now)
        stale = [(h, c) for h, c in free if c.active_at <= floor]
        if stale:
            return min(stale, key=lambda hc: (-per_ip[hc[1].ip], hc[1].active_at))[0]
        if not free:
            return None
        return min(free, key=lambda hc: (-per_ip[hc[1].ip], hc[1].opened_at, hc[1].active_at))[0]

    def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None


class GuardedServer(web.Server):
    """aiohttp's Server for ``plain``'s application, telling ``guard`` of every connection."""

    def __init__(self, plain: web.Server, guard: ApiGuard) -> None:
        super().__init__(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=plain._loop,
            **plain._kwargs,
        )
        self.guard = guard

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        self.guard.opened(handler, transport)

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        super().connection_lost(handler, exc)
        self.guard.closed(handler)


class GuardedRunner(web.AppRunner):
    """An AppRunner whose server is a ``GuardedServer`` reporting to ``guard``."""

    def __init__(self, app: web.Application, guard: ApiGuard, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.guard = guard

    async def _make_server(self) -> web.Server:
        return GuardedServer(await super()._make_server(), self.guard)

    async def _cleanup_server(self) -> None:
        self.guard.stop()
        await super()._cleanup_server()
