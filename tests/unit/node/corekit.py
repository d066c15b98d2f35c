"""Sans-IO node cores on one manual clock, joined by in-memory links (no sockets, no sleeps).

``World`` owns a ``ManualClock`` and ``ManualScheduler``; ``world.node(...)`` builds a
``NodeCore`` over a real SQLite store; ``world.connect(a, b)`` joins two cores with a pair of
links that deliver each sent message on the scheduler; ``world.run(seconds)`` advances time,
calling each core's periodic steps at the daemon's intervals.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from netdiag.node.chain import Chain
from netdiag.node.config import NodeConfig
from netdiag.node.core import NodeCore
from netdiag.node.crypto import Identity
from netdiag.node.genesis import ChainParams, GenesisSpec, lab_genesis
from netdiag.node.logs import NodeLog
from netdiag.node.messages import PROTOCOL_VERSION, Message
from netdiag.node.metrics import NodeMetrics
from netdiag.node.runtime import ManualClock, ManualScheduler
from netdiag.node.store import Store

GENESIS_MS = 1_700_000_000_000


def lab(
    validators: int = 3,
    slot_ms: int = 500,
    epoch: int = 10,
    allocations: list[tuple[bytes, int]] | None = None,
) -> tuple[GenesisSpec, list[Identity]]:
    return lab_genesis(
        validators,
        "core",
        "nd-core",
        GENESIS_MS,
        ChainParams(slot_ms=slot_ms, epoch_length=epoch),
        allocations=allocations,
    )


class MemLink:
    """One end of an in-memory connection, as the core sees it (netdiag.node.link.Link)."""

    def __init__(
        self, world: World, core: NodeCore, peer_id: bytes | None, outbound: bool, host: str
    ) -> None:
        self.world = world
        self.core = core
        self.peer_id = peer_id
        self.outbound = outbound
        self.remote_host = host
        self.remote_port = 40000 + len(world.links)
        self.dialed_addr: str | None = None
        self.listen_addr: str | None = None
        self.close_reason: str | None = None
        self.cookie: int | None = None
        self.tls = False
        self.connected_at = world.clock.monotonic()
        self.last_recv = self.connected_at
        self.twin: MemLink | None = None
        self.sent: list[Message] = []
        self.probe = False
        self.version = PROTOCOL_VERSION
        self.wire_bytes = (0, 0, 0, 0)
        self.send_backlog = 0
        world.links.append(self)

    @property
    def address(self) -> str:
        return f"{self.remote_host}:{self.remote_port}"

    @property
    def direction(self) -> str:
        return "outbound" if self.outbound else "inbound"

    @property
    def is_open(self) -> bool:
        return self.peer_id is not None and self.close_reason is None

    def send(self, msg: Message) -> None:
        if not self.is_open:
            return
        self.sent.append(msg)
        twin = self.twin
        if twin is not None:
            size = len(msgspec.msgpack.encode(msg))
            self.world.sched.call_soon(lambda: twin.receive(msg, size))

    def receive(self, msg: Message, size: int) -> None:
        if self.is_open:
            self.last_recv = self.world.clock.monotonic()
            self.core.on_message(self, msg, size)

    def close(self, reason: str, flush: bool = True) -> None:
        if self.close_reason is not None:
            return
        self.close_reason = reason
        self.world.sched.call_soon(lambda: self.core.on_closed(self, reason))
        if self.twin is not None and self.twin.close_reason is None:
            self.twin.close(f"peer closed: {reason}")


class World:
    def __init__(self, tmp: Path, spec: GenesisSpec, start_ms: int | None = None) -> None:
        self.tmp = tmp
        self.spec = spec
        wall = start_ms if start_ms is not None else spec.timestamp_ms + 10 * spec.params.slot_ms
        self.clock = ManualClock(wall_ms=wall)
        self.sched = ManualScheduler(self.clock)
        self.links: list[MemLink] = []
        self.cores: list[NodeCore] = []
        self.logs: dict[str, io.StringIO] = {}
        self.steps: list[tuple[float, Callable[[], None]]] = []

    def node(self, name: str, key: Identity | None = None, **cfg: Any) -> NodeCore:
        base: dict[str, Any] = dict(
            data_dir=str(self.tmp / name),
            genesis="unused",
            min_peers_to_produce=0,
            log_level="debug",
            gossip_heartbeat_s=0.5,
            status_interval_s=1.0,
        )
        base.update(cfg)
        conf = NodeConfig(**base)
        (self.tmp / name).mkdir(parents=True, exist_ok=True)
        chain = Chain(
            Store(self.tmp / name / "chain.sqlite"), self.spec, self.clock.wall_ms, conf.orphan_max
        )
        out = self.logs[name] = io.StringIO()
        core = NodeCore(
            conf,
            NodeLog(f"core-{name}-{id(self)}", out, conf.log_level),
            NodeMetrics(),
            key or Identity.generate(),
            self.spec,
            chain,
            self.clock,
            self.sched,
        )
        self.cores.append(core)
        self._every(conf.gossip_heartbeat_s, core.heartbeat_step)
        self._every(conf.status_interval_s, core.status_step)
        self._every(0.25, core.sync_step)
        if core.is_validator and conf.produce:
            self._every(max(0.01, self.spec.params.slot_ms / 10_000), core.produce_step)
        if core.is_validator:
            self._every(conf.presence_interval_s, core.beacon_step)
        return core

    def _every(self, interval: float, step: Callable[[], None]) -> None:
        def tick() -> None:
            step()
            self.sched.call_later(interval, tick)

        self.sched.call_later(interval, tick)

    def link_pair(
        self, a: NodeCore, b: NodeCore, host_a: str = "10.0.0.1", host_b: str = "10.0.0.2"
    ) -> tuple[MemLink, MemLink]:
        """a dials b: a's outbound link to b and b's inbound link from a (not yet opened)."""
        la = MemLink(self, a, b.node_id, True, host_b)
        lb = MemLink(self, b, a.node_id, False, host_a)
        la.twin, lb.twin = lb, la
        return la, lb

    def connect(
        self, a: NodeCore, b: NodeCore, host_a: str = "10.0.0.1"
    ) -> tuple[MemLink, MemLink]:
        la, lb = self.link_pair(a, b, host_a=host_a)
        if not b.peering.admit_inbound(lb):
            la.close("refused")
            return la, lb
        b.peering.pending.discard(lb)
        for core, link in ((a, la), (b, lb)):
            refusal = core.on_open(link)
            if refusal:
                link.close(refusal)
        self.sched.run_due()
        return la, lb

    def attach(
        self, core: NodeCore, peer_id: bytes | None = None, host: str = "10.9.9.9"
    ) -> MemLink:
        """A scripted peer: a link into ``core`` whose sends from the core are only recorded.
        Drive it with ``link.receive(msg, size)``."""
        link = MemLink(self, core, peer_id or Identity.generate().node_id, False, host)
        if not core.peering.admit_inbound(link):
            link.close("refused")
            return link
        core.peering.pending.discard(link)
        refusal = core.on_open(link)
        if refusal:
            link.close(refusal)
        self.sched.run_due()
        return link

    def run(self, seconds: float) -> None:
        self.sched.advance(seconds)

    def run_until(self, cond: Callable[[], bool], limit_s: float, step_s: float = 1.0) -> float:
        """Advance manual time until ``cond()`` holds; return the time it took, or raise."""
        waited = 0.0
        while not cond():
            if waited >= limit_s:
                raise AssertionError(f"condition not met within {limit_s} s of manual time")
            self.run(step_s)
            waited += step_s
        return waited

    def events(self, name: str, event: str) -> list[dict[str, Any]]:
        return [
            rec
            for line in self.logs[name].getvalue().splitlines()
            if (rec := json.loads(line)).get("event") == event
        ]
