"""A corekit world whose cores dial each other by address (discovery tests, no sockets).

``NetWorld.peer(name, host)`` registers a core at ``host:7600`` and drives its dial and
discovery steps at the daemon's intervals; a dial of a registered, live address becomes a pair
of in-memory links whose handshake completes after ``latency_s`` of manual time; anything else
fails to connect. ``kill`` takes a core off the network (its links close, dials to it fail).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from netdiag.node.core import NodeCore
from netdiag.node.crypto import Identity
from netdiag.node.genesis import GenesisSpec
from tests.unit.node.corekit import MemLink, World

PORT = 7600


def named_identity(name: str) -> Identity:
    """A key derived from the node's name: the same ids (and so the same buckets) every run."""
    seed = hashlib.sha256(b"kadkit/" + name.encode()).digest()
    return Identity.from_private(Ed25519PrivateKey.from_private_bytes(seed))


class DialLink(MemLink):
    """The dialer's end: when it closes, the shell's dial ends (``NodeCore.dial_ended``)."""

    probe = False
    opened = False  # the dialer's handshake completed (the shell saw a peer id)
    dial_done = False

    def close(self, reason: str, flush: bool = True) -> None:
        first = self.close_reason is None
        super().close(reason, flush)
        if first:
            self.world.sched.call_soon(self.end)

    def end(self) -> None:
        if self.dial_done:
            return
        self.dial_done = True
        core, addr = self.core, self.dialed_addr
        assert addr is not None
        pid = self.peer_id if self.opened else None
        core.dial_ended(addr, pid, self.close_reason or "", self.probe)
        if not self.probe:
            core.book.dialing.discard(addr)


class NetWorld(World):
    def __init__(self, tmp: Path, spec: GenesisSpec, latency_s: float = 0.01) -> None:
        super().__init__(tmp, spec)
        self.latency_s = latency_s
        self.by_addr: dict[str, NodeCore] = {}
        self.host_of: dict[NodeCore, str] = {}
        self.dead: set[NodeCore] = set()
        self.dials = 0
        self.probes = 0

    def peer(self, name: str, host: str, key: Identity | None = None, **cfg: Any) -> NodeCore:
        cfg.setdefault("discovery", True)
        core = self.node(name, key=key or named_identity(name), listen=f"{host}:{PORT}", **cfg)
        core.listen_port = PORT
        self.by_addr[f"{host}:{PORT}"] = core
        self.host_of[core] = host
        self._every(0.2, lambda: self.dial_step(core))
        self._every(1.0, lambda: None if core in self.dead else core.discovery_step())
        return core

    def addr(self, core: NodeCore) -> str:
        return f"{self.host_of[core]}:{PORT}"

    def dial_step(self, core: NodeCore) -> None:
        if core in self.dead:
            return
        for addr in core.dial_targets(PORT):
            self.dial(core, addr, probe=False)
        for addr in core.probe_targets():
            self.dial(core, addr, probe=True)

    def dial(self, a: NodeCore, addr: str, probe: bool) -> None:
        if not probe:
            a.book.dialing.add(addr)
        self.dials += 1
        self.probes += probe
        b = self.by_addr.get(addr)
        if b is None or b in self.dead or b is a:

            def fail() -> None:
                a.dial_ended(addr, None, "connect failed: unreachable", probe)
                if not probe:
                    a.book.dialing.discard(addr)

            self.sched.call_later(self.latency_s, fail)
            return
        la = DialLink(self, a, b.node_id, True, self.host_of[b])
        lb = MemLink(self, b, a.node_id, False, self.host_of[a])
        la.twin, lb.twin = lb, la
        la.probe = probe
        la.dialed_addr = la.listen_addr = addr
        lb.listen_addr = None if probe else self.addr(a)  # a probe announces no listen port
        a.peering.pending.add(la)

        def handshake() -> None:
            if la.close_reason is not None:
                return
            if b in self.dead or not b.peering.admit_inbound(lb):
                la.peer_id = None  # the handshake never completed
                la.close("connection refused")
                return
            b.peering.pending.discard(lb)
            refusal = b.on_open(lb)
            if refusal:
                lb.close(refusal)
            la.opened = True
            refusal = a.on_open(la)
            if refusal:
                la.close(refusal)

        self.sched.call_later(self.latency_s, handshake)

    def kill(self, core: NodeCore) -> None:
        self.dead.add(core)
        for link in self.links:
            if link.core is core:
                link.close("node killed")
