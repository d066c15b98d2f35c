"""The REST API on its own thread and event loop, so it answers while the node's loop is busy
(a block committing, a database locked by another process, a long verification step).

``ThreadedView`` is the ``NodeView`` the API thread sees. Reads of node state are asked of the
node loop and waited for briefly (``FRESH_S``); if the loop does not answer in time the last
answer it gave is served (the node loop also refreshes it every ``SNAPSHOT_S``). Blocks are
read through the API thread's own read-only SQLite connection (WAL readers are not blocked by
the writer). Metrics are read directly (the Prometheus client is thread-safe). A transaction is
checked on the node loop; the API waits for the verdict off its own loop (api.py ``to_thread``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from netdiag.node.model import Block, Tx
from netdiag.node.store import Store
from netdiag.node.views import CoreView

T = TypeVar("T")
FRESH_S = 0.02  # how long a read waits for the node loop before serving the last answer
# (well under the API's 50 ms p99 goal: a busy loop must not decide the tail)
SNAPSHOT_S = 0.5  # how often the node loop refreshes the last answers anyway
TX_WAIT_S = 30.0


class ThreadedView:
    def __init__(self, view: CoreView, node_loop: asyncio.AbstractEventLoop, db: Path) -> None:
        self.view = view
        self.node_loop = node_loop
        self.db = db
        self._last: dict[str, Any] = {}
        self._reader: Store | None = None
        self._reader_lock = threading.Lock()

    # -- called on the node loop -----------------------------------------------------------

    def refresh(self) -> None:
        self._last["status"] = self.view.status()
        self._last["peers"] = self.view.peers()

    # -- called on the API thread ----------------------------------------------------------

    def _ask(self, name: str | None, fn: Callable[[], T], wait_s: float = FRESH_S) -> T:
        """Run ``fn`` on the node loop. With a ``name``, serve its last answer if the loop
        does not answer within ``wait_s``; without, wait for the answer."""
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(fn())
                except Exception as e:
                    fut.set_exception(e)

        self.node_loop.call_soon_threadsafe(run)
        if name is None or name not in self._last:
            return fut.result(wait_s)
        try:
            value = fut.result(FRESH_S)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            return self._last[name]  # type: ignore[no-any-return]
        self._last[name] = value
        return value

    def status(self) -> dict[str, object]:
        return self._ask("status", self.view.status, wait_s=TX_WAIT_S)

    def peers(self) -> list[dict[str, object]]:
        return self._ask("peers", self.view.peers, wait_s=TX_WAIT_S)

    def table(self) -> dict[str, object]:
        return self._ask("table", self.view.table, wait_s=TX_WAIT_S)

    def message_stats(self, mid: bytes) -> dict[str, object] | None:
        return self._ask(None, lambda: self.view.message_stats(mid), wait_s=TX_WAIT_S)

    def metrics_text(self) -> bytes:
        return self.view.metrics_text()

    def _store(self) -> Store:
        with self._reader_lock:
            if self._reader is None:
                self._reader = Store.reader(self.db)
            return self._reader

    def block_at(self, height: int) -> Block | None:
        return self._store().block_at(height) if 0 <= height < 2**63 else None

    def block_by_hash(self, block_hash: bytes) -> Block | None:
        return self._store().block_by_hash(block_hash)

    def submit_local_tx(self, tx: Tx) -> tuple[str, bytes]:
        """Blocking: api.py calls it through ``asyncio.to_thread``. The node loop answers
        when the tx's signature batch is back (txbatch.py), not within the call it runs."""
        fut: concurrent.futures.Future[tuple[str, bytes]] = concurrent.futures.Future()

        def done(verdict: str, txid: bytes) -> None:
            if not fut.done():
                fut.set_result((verdict, txid))

        def run() -> None:
            if fut.set_running_or_notify_cancel():
                try:
                    self.view.submit_local_tx_later(tx, done)
                except Exception as e:
                    fut.set_exception(e)

        self.node_loop.call_soon_threadsafe(run)
        return fut.result(TX_WAIT_S)

    def close(self) -> None:
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None


class ApiThread:
    """Owns the API thread and its loop; ``start``/``stop`` are awaited on the node loop."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._run, name="node-api", daemon=True)

    def _run(self) -> None:
        assert self.loop is not None
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        self.loop.close()

    async def start(self, coro: Any) -> Any:
        self.loop = asyncio.new_event_loop()
        self.thread.start()
        return await self.run(coro)

    async def run(self, coro: Any) -> Any:
        assert self.loop is not None, "API thread not started"
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def stop(self) -> None:
        if self.loop is not None and self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5.0)
