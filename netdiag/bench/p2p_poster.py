"""`bench p2p`'s load generator: signed transactions on an open-loop schedule, POSTed over
several keep-alive connections at once.

Open loop: transaction i is due at t0 + i / rate whatever the latency of the earlier ones, so a
slow answer holds one connection, not the schedule (a closed loop that waits for each answer
offers less load exactly when the cluster is busiest — the demo's bbr round offered 249 of 400).
In flight is bounded (the POSTs of one timeout's worth of schedule): a slot that finds the bound
reached is not sent late but counted as shed, so the result says how much load was offered.

The schedule and the tallies are plain data (`LoadStats`, `due_times`); the asyncio shell owns
the sockets. Sockets are opened inside the node's network namespace when it has one
(`netns.run_in`), then driven by the event loop of the poster's own thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import json
import math
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from netdiag.bench import p2p_stats
from netdiag.errors import NetdiagError
from netdiag.kernel import netns
from netdiag.nodeapi import NodeApi, TxSigner, accepted_txid

POST_TIMEOUT_S = 10.0  # per POST; after the last slot, outstanding answers are awaited as long
MIN_IN_FLIGHT = 8


def in_flight_bound(rate: float, post_timeout_s: float = POST_TIMEOUT_S) -> int:
    """Outstanding POSTs allowed (one connection each, all nodes together): the schedule's
    POSTs over one timeout, so a slot is shed only when answers are slower than the timeout
    (the nodes accept far fewer at once: the rest wait in their queues, as an open loop must)."""
    return max(MIN_IN_FLIGHT, math.ceil(rate * post_timeout_s))


def due_times(rate: float, count: int) -> list[float]:
    """Offsets (s) from the start at which each of `count` transactions is due."""
    return [i / rate for i in range(count)]


@dataclass
class LoadStats:
    """What the generator planned, offered and achieved in one load phase."""

    planned: int = 0
    offered: int = 0  # POSTs started in their slot
    shed: int = 0  # slots that found max_in_flight POSTs outstanding (or no live node)
    accepted: int = 0  # answered accepted: the achieved load
    failed: int = 0  # refused, an error, or no answer in time
    lag_ms: list[float] = field(default_factory=list)  # request written - slot time
    latency_ms: list[float] = field(default_factory=list)  # answer - request written
    connect_ms: list[float] = field(default_factory=list)  # opening a connection (part of lag)

    def record(self) -> dict[str, Any]:
        """The fields a `loads` row carries (percentiles rounded; lists are not kept)."""

        def pct(vals: list[float], q: float) -> float | None:
            v = p2p_stats.percentile(vals, q)
            return None if v is None else round(v, 2)

        return {
            "txs_planned": self.planned,
            "txs_offered": self.offered,
            "txs_shed": self.shed,
            "txs_sent": self.accepted,
            "txs_failed": self.failed,
            "send_lag_p50_ms": pct(self.lag_ms, 50),
            "send_lag_p99_ms": pct(self.lag_ms, 99),
            "connections_opened": len(self.connect_ms),
            "connect_p99_ms": pct(self.connect_ms, 99),
            "post_latency_p50_ms": pct(self.latency_ms, 50),
            "post_latency_p99_ms": pct(self.latency_ms, 99),
        }


class _Conn:
    """One keep-alive HTTP/1.1 connection (the node answers with Content-Length)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def post(self, host: str, path: str, body: bytes) -> tuple[int, bytes]:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        await self.writer.drain()
        status_line = await self.reader.readline()
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise ConnectionError(f"bad status line {status_line[:80]!r}")
        length = None
        while (line := await self.reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        if length is None:
            raise ConnectionError("answer without Content-Length")
        return int(parts[1]), await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


class TxPoster:
    """Posts `count` transactions at `rate` per second, round-robin over the live nodes."""

    def __init__(
        self,
        nodes: dict[str, NodeApi],
        rate: float,
        count: int,
        tx_bytes: int,
        seed: bytes,
        *,
        alive: Callable[[str], bool] = lambda _n: True,
        on_accepted: Callable[[str, str], None] = lambda _n, _t: None,
        max_in_flight: int | None = None,  # default: in_flight_bound(rate, post_timeout_s)
        post_timeout_s: float = POST_TIMEOUT_S,
    ) -> None:
        self.nodes = nodes
        self.rate, self.tx_bytes = rate, tx_bytes
        self.signer = TxSigner(seed)
        self.alive, self.on_accepted = alive, on_accepted
        self.max_in_flight = max_in_flight or in_flight_bound(rate, post_timeout_s)
        self.post_timeout_s = post_timeout_s
        self.stats = LoadStats(planned=count)
        self.stop = threading.Event()  # set: no further slot is sent (they count as shed)
        self._idle: dict[str, list[_Conn]] = {n: [] for n in nodes}

    def run(self) -> LoadStats:
        """Blocking: the whole schedule, then the outstanding answers (for a thread)."""
        asyncio.run(self._run())
        return self.stats

    async def _run(self) -> None:
        st = self.stats
        # connections are opened in a thread (a namespace is entered per thread): enough of
        # them that a burst of opens does not queue behind the default executor's few
        asyncio.get_running_loop().set_default_executor(
            concurrent.futures.ThreadPoolExecutor(16, thread_name_prefix="p2p-post")
        )
        order = itertools.cycle(sorted(self.nodes))
        in_flight: set[asyncio.Task[None]] = set()
        t0 = time.monotonic()
        for i, offset in enumerate(due_times(self.rate, st.planned)):
            delay = t0 + offset - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if self.stop.is_set():
                st.shed += st.planned - i
                break
            node = self._next_live(order)
            if node is None or len(in_flight) >= self.max_in_flight:
                st.shed += 1
                continue
            body, _txid = self.signer.next_tx(os.urandom(self.tx_bytes))
            st.offered += 1
            task = asyncio.create_task(self._post(node, json.dumps(body).encode(), t0 + offset))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        if in_flight:
            _done, late = await asyncio.wait(in_flight, timeout=self.post_timeout_s)
            for t in late:
                t.cancel()
            st.failed += len(late)
        for conns in self._idle.values():
            for c in conns:
                c.close()

    def _next_live(self, order: itertools.cycle[str]) -> str | None:
        for _ in range(len(self.nodes)):
            node = next(order)
            if self.alive(node):
                return node
        return None

    async def _open(self, api: NodeApi) -> _Conn:
        def make() -> socket.socket:
            s = socket.create_connection((api.host, api.port), timeout=self.post_timeout_s)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.setblocking(False)
            return s

        t0 = time.monotonic()
        sock = await asyncio.to_thread(netns.run_in, api.netns_name, make)
        reader, writer = await asyncio.open_connection(sock=sock)
        self.stats.connect_ms.append((time.monotonic() - t0) * 1e3)
        return _Conn(reader, writer)

    async def _post(self, node: str, body: bytes, due: float) -> None:
        st, api = self.stats, self.nodes[node]
        conn: _Conn | None = None
        idle = self._idle[node]
        try:
            # a kept-alive connection the node closed while idle fails at once: one retry on
            # a fresh connection (as NodeApi does); a fresh one is not retried
            for reused in (bool(idle), False):
                conn = idle.pop() if reused else await self._open(api)
                sent_at = time.monotonic()
                try:
                    status, data = await asyncio.wait_for(
                        conn.post(api.host, "/tx", body), self.post_timeout_s
                    )
                    break
                except (ConnectionError, asyncio.IncompleteReadError):
                    conn.close()
                    conn = None
                    if not reused:
                        raise
            st.lag_ms.append((sent_at - due) * 1e3)
            st.latency_ms.append((time.monotonic() - sent_at) * 1e3)
        except (OSError, ValueError, TimeoutError, asyncio.IncompleteReadError, NetdiagError):
            # NetdiagError: the node's namespace is gone (netns.run_in)
            if conn is not None:
                conn.close()
            st.failed += 1
            return
        assert conn is not None
        self._idle[node].append(conn)
        try:
            doc = json.loads(data)
        except ValueError:
            doc = None
        txid = accepted_txid(status, doc)
        if txid is None:
            st.failed += 1
            return
        st.accepted += 1
        self.on_accepted(node, txid)
