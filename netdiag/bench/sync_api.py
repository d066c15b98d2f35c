"""How the joiner's REST API answers while it commits a sync, against the same API idle.

GET /status is served by the API thread (from the node loop if it answers within 50 ms, else
its last answer); POST /tx needs the node loop itself (the tx is checked there), so its latency
is the loop's responsiveness. Both are timed from the client (a connection per request,
connect included) while the joiner is syncing (blocks committing) and after it, idle — side by
side in one run.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from netdiag.nodeapi import NodeApi, TxSigner

TX_EVERY = 2  # one POST /tx per this many /status polls (a tx costs the node a verify)


def p99(xs: list[float]) -> float:
    if len(xs) < 2:
        return xs[0] if xs else 0.0
    return statistics.quantiles(xs, n=100, method="inclusive")[98]


class ApiProbe:
    def __init__(self, client: Callable[[], NodeApi], seed: bytes) -> None:
        self.client = client
        self.signer = TxSigner(seed)
        self.ms: dict[str, list[float]] = {}
        self._polls = 0

    def _timed(self, key: str, fn: Callable[[NodeApi], Any]) -> Any:
        with self.client() as api:
            t0 = time.perf_counter()
            out = fn(api)
            self.ms.setdefault(key, []).append((time.perf_counter() - t0) * 1000)
        return out

    def poll(self, phase: str) -> dict[str, Any]:
        """One /status (and every TX_EVERY-th poll a POST /tx), filed under ``phase``."""
        self._polls += 1
        if self._polls % TX_EVERY == 0:
            body, _ = self.signer.next_tx(b"bench sync api probe")
            self._timed(f"{phase}_tx", lambda api: api.submit_tx(body))
        st: dict[str, Any] = self._timed(f"{phase}_status", lambda api: api.status())
        return st

    def idle(self, polls: int) -> None:
        for _ in range(polls):
            self.poll("idle")
            time.sleep(0.01)

    def figures(self) -> dict[str, float]:
        """p50/p99 (ms) and sample counts per phase and request, and the ratios sync/idle."""
        out: dict[str, float] = {}
        for key, xs in sorted(self.ms.items()):
            out[f"api_{key}_p50_ms"] = round(statistics.median(xs), 2)
            out[f"api_{key}_p99_ms"] = round(p99(xs), 2)
            out[f"api_{key}_n"] = len(xs)
        for kind in ("status", "tx"):
            busy, idle = out.get(f"api_sync_{kind}_p99_ms"), out.get(f"api_idle_{kind}_p99_ms")
            if busy is not None and idle:
                out[f"api_{kind}_p99_sync_vs_idle"] = round(busy / idle, 2)
        return out
