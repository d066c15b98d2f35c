"""Who the node may talk to: the address book (bootstrap and learned addresses, reconnect
backoff), bans of peer ids and of IP addresses, and the failed-handshake window per IP.
Bookkeeping only, with an injected clock; the daemon logs and counts the decisions."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from netdiag.node.config import NodeConfig, split_hostport
from netdiag.node.errors import ConfigError

FAILED_HANDSHAKE_WINDOW_S = 60.0
# a ban's reason kept for its refusals: with the refusal's head (~50 B) under Disconnect's 200
BAN_REASON_MAX = 140
MAX_LEARNED_PER_MESSAGE = 64


@dataclass
class AddrState:
    failures: int = 0
    next_try: float = 0.0
    bootstrap: bool = False


class PeerBook:
    def __init__(self, cfg: NodeConfig, clock: Callable[[], float]) -> None:
        self.cfg = cfg
        self.clock = clock
        self.addrs: dict[str, AddrState] = {p: AddrState(bootstrap=True) for p in cfg.peers}
        self.dialing: set[str] = set()
        self.self_addrs: set[str] = set()
        self.banned: dict[bytes, float] = {}  # peer id -> until
        self.ban_reasons: dict[bytes, str] = {}  # peer id -> why (told on a refused reconnect)
        self.banned_ips: dict[str, float] = {}  # ip -> until
        self.failed_handshakes: dict[str, deque[float]] = {}

    # -- addresses -------------------------------------------------------------------------

    def add(self, addr: str, bootstrap: bool = False) -> None:
        split_hostport(addr)
        self.addrs.setdefault(addr, AddrState(bootstrap=bootstrap))

    def learn(self, addrs: Iterable[str]) -> None:
        """Addresses from peer exchange: bounded, validated, never ourselves."""
        for a in list(addrs)[:MAX_LEARNED_PER_MESSAGE]:
            if len(self.addrs) >= self.cfg.max_known_addrs:
                return
            if a in self.self_addrs:
                continue
            try:
                split_hostport(a)
            except ConfigError:
                continue
            self.addrs.setdefault(a, AddrState())

    def forget(self, addr: str) -> None:
        """Drop an address (one a name no longer resolves to); a live connection stays."""
        self.addrs.pop(addr, None)

    def mark_self(self, addr: str) -> None:
        self.addrs.pop(addr, None)
        self.self_addrs.add(addr)

    def to_dial(
        self,
        connected: set[str | None],
        own: set[str],
        outbound: int,
        bootstrap_only: bool = False,
    ) -> list[str]:
        """Addresses to dial now, up to the outbound target; each is then not retried before
        ``reconnect_min_s`` (or its backoff). ``bootstrap_only``: with discovery the other
        outbound peers come from the routing table, never from unverified peer exchange."""
        now = self.clock()
        target = min(self.cfg.target_outbound, self.cfg.max_outbound)
        out: list[str] = []
        for addr, st in self.addrs.items():
            # a dial whose connection is up is counted in ``outbound`` already
            if outbound + len(self.dialing - connected) + len(out) >= target:
                break
            if bootstrap_only and not st.bootstrap:
                continue
            if addr in connected or addr in self.dialing or addr in own or st.next_try > now:
                continue
            st.next_try = now + self.cfg.reconnect_min_s
            out.append(addr)
        return out

    def dial_failed(self, addr: str) -> float:
        """Exponential backoff with jitter; returns the delay chosen."""
        st = self.addrs.setdefault(addr, AddrState())
        st.failures += 1
        backoff = float(min(self.cfg.reconnect_max_s, self.cfg.reconnect_min_s * 2**st.failures))
        st.next_try = self.clock() + backoff * random.uniform(0.8, 1.2)
        return backoff

    def connected(self, addr: str) -> None:
        self.addrs.setdefault(addr, AddrState()).failures = 0

    def disconnected(self, addr: str) -> None:
        st = self.addrs.get(addr)
        if st is not None:
            st.next_try = self.clock() + self.cfg.reconnect_min_s

    # -- bans ------------------------------------------------------------------------------

    def ban_peer(self, pid: bytes, reason: str = "") -> None:
        self.banned[pid] = self.clock() + self.cfg.ban_seconds
        self.ban_reasons[pid] = reason[:BAN_REASON_MAX]

    def ban_refusal(self, pid: bytes) -> str:
        """What a banned peer's reconnect is refused with: for how much longer, and why (the
        ban's own Disconnect is lost when the ban reset the socket: output it did not read)."""
        left = self.banned.get(pid, 0.0) - self.clock()
        why = self.ban_reasons.get(pid, "")
        head = f"refused: peer {pid[:6].hex()} is banned ({max(0.0, left):.0f} s more)"
        return head + (f": {why}" if why else "")

    def ban_ip(self, ip: str) -> None:
        self.banned_ips[ip] = self.clock() + self.cfg.ban_seconds

    def peer_banned(self, pid: bytes) -> bool:
        return self.banned.get(pid, 0.0) > self.clock()

    def ip_banned(self, ip: str) -> bool:
        return self.banned_ips.get(ip, 0.0) > self.clock()

    def handshake_failed(self, ip: str) -> bool:
        """Count a failed inbound handshake; True when this one gets the IP banned."""
        now = self.clock()
        window = self.failed_handshakes.setdefault(ip, deque())
        window.append(now)
        while window and window[0] < now - FAILED_HANDSHAKE_WINDOW_S:
            window.popleft()
        if len(window) > self.cfg.max_failed_handshakes_per_ip:
            self.banned_ips[ip] = now + self.cfg.ban_seconds
            window.clear()
            return True
        return False

    def expire(self) -> None:
        now = self.clock()
        for pid in [p for p, until in self.banned.items() if until <= now]:
            del self.banned[pid]
            self.ban_reasons.pop(pid, None)
        for ip in [i for i, until in self.banned_ips.items() if until <= now]:
            del self.banned_ips[ip]
        for ip, window in list(self.failed_handshakes.items()):
            if not window or window[-1] < now - FAILED_HANDSHAKE_WINDOW_S:
                del self.failed_handshakes[ip]
