"""`--peer-dns NAME:PORT`: peers found by name, kept current by re-resolving.

In a Kubernetes StatefulSet a headless service's name resolves to the address of every pod
(ready or not, with publishNotReadyAddresses); pods come and go with new addresses, so the
name is resolved again every ``peer_dns_interval_s``. New addresses are dialed as bootstrap
peers (reconnect with backoff); addresses the name no longer has are forgotten — live
connections to them stay until they close. A failed lookup keeps the last answer (DNS can
blip; a StatefulSet's first pod starts before the name has any address). Our own address,
once a dial has shown it is us, is never added again.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

from netdiag.node.config import split_hostport
from netdiag.node.logs import NodeLog
from netdiag.node.peers import PeerBook

Resolver = Callable[[str, int], Awaitable[list[str]]]


async def resolve(host: str, port: int) -> list[str]:
    """Every address HOST has, as HOST:PORT strings the peer book takes ([v6]:port)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    out = []
    for family, *_rest, sockaddr in infos:
        ip = str(sockaddr[0])
        addr = f"[{ip}]:{port}" if family == socket.AF_INET6 else f"{ip}:{port}"
        if addr not in out:
            out.append(addr)
    return out


class PeerDns:
    def __init__(
        self, names: list[str], book: PeerBook, log: NodeLog, resolver: Resolver = resolve
    ) -> None:
        self.names = [(n, *split_hostport(n)) for n in names]
        self.book, self.log, self.resolver = book, log, resolver
        self.found: dict[str, set[str]] = {n: set() for n, _h, _p in self.names}
        self.owned: set[str] = set()  # addresses we put in the book (a --peer is not ours)

    async def refresh(self) -> None:
        for name, host, port in self.names:
            try:
                found = set(await self.resolver(host, port))
            except (OSError, UnicodeError) as e:  # gaierror is an OSError
                self.log.warning(
                    "peer_dns_failed",
                    f"cannot resolve {name}: {e}; keeping {len(self.found[name])} addresses",
                    name=name,
                    error=str(e),
                )
                continue
            found -= self.book.self_addrs
            new = found - self.found[name]
            gone = self.found[name] - found
            self.found[name] = found
            for addr in sorted(new):
                if addr not in self.book.addrs:
                    self.book.add(addr, bootstrap=True)
                    self.owned.add(addr)
            still = set().union(*self.found.values())
            for addr in gone & self.owned - still:
                self.book.forget(addr)
                self.owned.discard(addr)
            if new or gone:
                self.log.info(
                    "peer_dns",
                    f"{name}: {len(found)} addresses (+{len(new)} -{len(gone)})",
                    name=name,
                    added=sorted(new),
                    removed=sorted(gone),
                )

    async def run(self, interval_s: float) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(interval_s)
