"""Memory: a TLS connect/close flood plus idle raw TCP sockets against one validator.

Each flood connection completes the TLS handshake and closes without a word of the node's
protocol; the idle sockets connect and send nothing (they sit in the TLS handshake). A defended
node counts every accepted socket toward its limits, counts failed handshakes toward the IP
ban, and its RSS after the flood is back within +25 % of before, with production going on.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl

from netdiag.bench.attack.base import AsyncAttack, AttackContext, Outcome
from netdiag.bench.attack.wire import AttackKey, client_tls, try_handshake


class TlsFlood(AsyncAttack):
    name = "tls_flood"
    summary = "TLS connect/close flood + idle raw sockets: RSS back within +25 %, chain going on"
    rss_bound = 1.25
    growth_bound = 0.9
    duration_factor = 2.0  # the flood: 60 s at the default --duration 30

    def __init__(self, idle_sockets: int = 500, concurrency: int = 16) -> None:
        self.idle_sockets = idle_sockets
        self.concurrency = concurrency

    async def _run(self, ctx: AttackContext) -> Outcome:
        t = ctx.cluster.target(ctx.target_index)
        idle_n = 100 if ctx.quick else self.idle_sockets
        idle: list[socket.socket] = []
        idle_failed = 0
        for _ in range(idle_n):
            s = socket.socket()
            s.setblocking(False)
            try:
                s.bind((ctx.source_ip, 0))
                s.settimeout(2.0)
                s.connect((t.host, t.port))
                idle.append(s)
            except OSError:
                idle_failed += 1
                s.close()
        ctx.progress(f"{len(idle)} idle raw sockets open; flooding TLS connect/close")
        counts = {"ok": 0, "failed": 0}
        loop = asyncio.get_running_loop()
        end = loop.time() + ctx.duration_s
        tls = client_tls()

        async def worker() -> None:
            while loop.time() < end:
                try:
                    _r, w = await asyncio.wait_for(
                        asyncio.open_connection(
                            t.host,
                            t.port,
                            ssl=tls if t.tls else None,
                            local_addr=(ctx.source_ip, 0),
                        ),
                        3.0,
                    )
                    counts["ok"] += 1
                    w.transport.abort()
                except (OSError, TimeoutError, ssl.SSLError):
                    counts["failed"] += 1
                    await asyncio.sleep(0.01)

        await asyncio.gather(*(worker() for _ in range(self.concurrency)))
        # how many idle sockets the node had already closed (a read of b"" means FIN from it)
        closed_by_node = 0
        for s in idle:
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError, OSError):
                if s.recv(1, socket.MSG_PEEK) == b"":
                    closed_by_node += 1
            s.close()
        refusal = await try_handshake(t, ctx.source_ip, AttackKey())
        total = counts["ok"] + counts["failed"]
        return Outcome(
            banned=refusal is not None,
            why=f"{counts['ok']} TLS connects completed of {total} tried; "
            f"{closed_by_node}/{len(idle)} idle sockets closed by the node; "
            f"afterwards a fresh handshake from the flooding IP was "
            f"{'refused (' + refusal[:60] + ')' if refusal else 'accepted'}",
            figures={
                "flood_connects": counts["ok"],
                "flood_failed": counts["failed"],
                "flood_connects_per_s": round(counts["ok"] / ctx.duration_s, 1),
                "idle_sockets": len(idle),
                "idle_refused": idle_failed,
                "idle_closed_by_node": closed_by_node,
            },
        )


ATTACK = TlsFlood()
