"""In-process nodes on loopback (real TCP, real TLS, real SQLite) and a raw scripted peer."""

from __future__ import annotations

import asyncio
import io
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from netdiag.node import tls
from netdiag.node.config import NodeConfig
from netdiag.node.crypto import Identity
from netdiag.node.daemon import Node
from netdiag.node.entropy import lab_secret
from netdiag.node.genesis import ChainParams, GenesisSpec, lab_genesis, write_lab
from netdiag.node.logs import NodeLog
from netdiag.node.messages import Message
from netdiag.node.protocol import HandshakeComplete, MessageReceived, PeerProtocol


def write_lab_genesis(
    tmp: Path, validators: int = 1, slot_ms: int = 200, seed: str = "t", entropy_span: int = 0
) -> tuple[Path, GenesisSpec, list[Identity]]:
    """``entropy_span`` > 0: a network with entropy anchors (commit-reveal; entropy.py), the
    validators' secrets written next to their keys."""
    spec, keys = lab_genesis(
        validators,
        seed,
        "nd-test",
        int(time.time() * 1000) - 10_000,
        ChainParams(slot_ms=slot_ms, epoch_length=10),
        entropy_span,
    )
    secrets = [lab_secret(seed, i) for i in range(validators)] if entropy_span else None
    write_lab(tmp, spec, keys, secrets=secrets)
    return tmp / "genesis.json", spec, keys


def node_cfg(tmp: Path, name: str, genesis: Path, key: str = "", **kw: Any) -> NodeConfig:
    base: dict[str, Any] = dict(
        data_dir=str(tmp / name),
        genesis=str(genesis),
        key=key,
        listen="127.0.0.1:0",
        api="127.0.0.1:0",
        min_peers_to_produce=0,
        gossip_heartbeat_s=0.2,
        status_interval_s=0.3,
        reconnect_min_s=0.2,
        log_level="debug",
    )
    base.update(kw)
    return NodeConfig(**base)


@asynccontextmanager
async def running(cfg: NodeConfig) -> AsyncIterator[tuple[Node, io.StringIO]]:
    out = io.StringIO()
    node = Node(cfg, NodeLog(Path(cfg.data_dir).name, out, cfg.log_level))
    await node.start()
    try:
        yield node, out
    finally:
        await node.stop()


async def api(node: Node, path: str, method: str = "GET", json: Any = None) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, f"http://127.0.0.1:{node.api_port}{path}", json=json) as r,
    ):
        if r.content_type == "application/json":
            return r.status, await r.json()
        return r.status, await r.text()


async def wait_for(pred: Any, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def on_disk(*nodes: Node) -> None:
    """Wait until every commit of ``nodes`` is durable (writer.py). The nodes run on the
    caller's loop: until its next await, none commits anything new in memory."""
    await wait_for(
        lambda: all(n.chain.store.pending_blocks == 0 for n in nodes), what="commits on disk"
    )


def client_ssl(tmp: Path, ident: Identity) -> ssl.SSLContext:
    cert, key = tls.write_certificate(ident, tmp / f"tls-{ident.node_id.hex()[:8]}")
    return tls.client_context(cert, key)


class RawPeer:
    """A scripted peer speaking the real protocol, for attacks after a genuine handshake."""

    def __init__(self, node: Node, identity: Identity | None = None) -> None:
        assert node.chain is not None
        self.identity = identity or Identity.generate()
        self.proto = PeerProtocol(self.identity, node.genesis.network_id, node.chain.genesis_hash)
        self.node = node
        self.received: list[Message] = []

    async def connect(self, ssl_ctx: ssl.SSLContext | None) -> None:
        self.r, self.w = await asyncio.open_connection(
            "127.0.0.1", self.node.listen_port, ssl=ssl_ctx
        )
        self.proto.start()
        self.w.write(self.proto.data_to_send())
        while True:
            data = await asyncio.wait_for(self.r.read(65536), 20)
            assert data, "node closed the connection during the handshake"
            evs = self.proto.receive_data(data)
            self.w.write(self.proto.data_to_send())
            self._collect(evs)
            if any(isinstance(e, HandshakeComplete) for e in evs):
                return

    def _collect(self, evs: list[Any]) -> None:
        self.received += [e.message for e in evs if isinstance(e, MessageReceived)]

    def send(self, msg: Message) -> None:
        self.proto.send(msg)
        self.w.write(self.proto.data_to_send())

    def send_raw(self, data: bytes) -> None:
        self.w.write(data)

    async def read_until(self, pred: Any, timeout: float = 20.0) -> None:
        """Read and decode what the node sends until ``pred(self.received)`` holds."""
        deadline = time.monotonic() + timeout
        while not pred(self.received):
            left = deadline - time.monotonic()
            assert left > 0, f"timed out; received {[type(m).__name__ for m in self.received]}"
            try:
                data = await asyncio.wait_for(self.r.read(65536), left)
            except TimeoutError:
                continue
            assert data, "node closed the connection"
            self._collect(self.proto.receive_data(data))

    async def closed_by_node(self, timeout: float = 20.0) -> bool:
        """Read until EOF; True if the node closed the connection."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = await asyncio.wait_for(self.r.read(65536), deadline - time.monotonic())
            except TimeoutError:
                return False
            except (ConnectionError, ssl.SSLError):
                return True
            if not data:
                return True
            self._collect(self.proto.receive_data(data))
        return False
