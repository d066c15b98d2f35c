"""An attacker's own client of the node's wire protocol, written from the documented format
(not the node's code, so it can also say what the node would never say).

Frames: a 4-byte big-endian length, then msgpack. Messages are maps tagged by ``"t"`` (the
node's msgspec tagged union); byte strings are msgpack bin. Handshake: both send Hello, then
each signs ``b"netdiag-node/handshake/v1\\0" + msgpack([network_id, genesis_hash,
peer_nonce, signer_id, verifier_id])`` with its Ed25519 key and sends it as Auth.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import struct
from dataclasses import dataclass
from typing import Any

import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

LEN = struct.Struct(">I")
HANDSHAKE_DOMAIN = b"netdiag-node/handshake/v1\x00"
PROTOCOL_VERSION = 1
MAX_READ_FRAME = 8 << 20  # what this client is willing to buffer for one frame


class Refused(Exception):
    """The node closed the connection or said Disconnect before the handshake completed."""


def client_tls() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # node certs are self-signed (pinned to the node id)
    return ctx


def frame(msg: dict[str, Any]) -> bytes:
    body = msgspec.msgpack.encode(msg)
    return LEN.pack(len(body)) + body


@dataclass
class Target:
    """Where and what the node is: its P2P address and the chain facts the handshake needs."""

    host: str
    port: int
    tls: bool
    network_id: str
    genesis_hash: bytes


class AttackKey:
    """An Ed25519 identity of the attacker (fresh random key unless one is given)."""

    def __init__(self, key: Ed25519PrivateKey | None = None) -> None:
        self.key = key or Ed25519PrivateKey.generate()
        self.node_id = self.key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )


class WirePeer:
    """One connection to the node, from a chosen source address."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.peer_id: bytes | None = None

    @classmethod
    async def connect(cls, t: Target, source_ip: str, timeout_s: float = 5.0) -> WirePeer:
        r, w = await asyncio.wait_for(
            asyncio.open_connection(
                t.host,
                t.port,
                ssl=client_tls() if t.tls else None,
                local_addr=(source_ip, 0),
                limit=1 << 20,
            ),
            timeout_s,
        )
        return cls(r, w)

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send(self, msg: dict[str, Any]) -> None:
        await self.send_raw(frame(msg))

    async def recv(self, timeout_s: float) -> dict[str, Any] | None:
        """Next message, or None on timeout. Raises Refused on EOF."""
        try:
            head = await asyncio.wait_for(self.reader.readexactly(LEN.size), timeout_s)
            (n,) = LEN.unpack(head)
            if n > MAX_READ_FRAME:
                raise Refused(f"node sent a {n}-byte frame")
            body = await asyncio.wait_for(self.reader.readexactly(n), timeout_s)
        except TimeoutError:
            return None
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError) as e:
            raise Refused(f"connection closed: {e!r}") from e
        doc = msgspec.msgpack.decode(body)
        return doc if isinstance(doc, dict) else {"t": "?"}

    async def handshake(self, key: AttackKey, t: Target, timeout_s: float = 5.0) -> bytes:
        """Complete Hello/Auth as ``key``; return the node id. Raises Refused if the node
        closes or says Disconnect (e.g. banned) before or right after Auth."""
        nonce = os.urandom(32)
        await self.send(
            {
                "t": "hello",
                "network_id": t.network_id,
                "genesis_hash": t.genesis_hash,
                "version": PROTOCOL_VERSION,
                "node_id": key.node_id,
                "nonce": nonce,
                "listen_port": 0,
                "agent": "netdiag-bench-attack",
            }
        )
        hello = await self._expect("hello", timeout_s)
        transcript = HANDSHAKE_DOMAIN + msgspec.msgpack.encode(
            (t.network_id, t.genesis_hash, hello["nonce"], key.node_id, hello["node_id"])
        )
        await self.send({"t": "auth", "signature": key.key.sign(transcript)})
        await self._expect("auth", timeout_s)
        self.peer_id = bytes(hello["node_id"])
        return self.peer_id

    async def _expect(self, tag: str, timeout_s: float) -> dict[str, Any]:
        msg = await self.recv(timeout_s)
        if msg is None:
            raise Refused(f"no {tag} within {timeout_s} s")
        if msg.get("t") == "bye":
            raise Refused(f"node said bye: {msg.get('reason')}")
        if msg.get("t") != tag:
            raise Refused(f"expected {tag}, got {msg.get('t')}")
        return msg

    async def refused_after_open(self, wait_s: float = 1.0) -> str | None:
        """After a handshake, the node may still refuse (banned, duplicate): it says bye at
        once. The reason if it did within ``wait_s``, else None (the connection is open)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + wait_s
        while (left := end - loop.time()) > 0:
            try:
                msg = await self.recv(left)
            except Refused as e:
                return str(e)
            if msg is None:
                return None
            if msg.get("t") == "bye":
                return str(msg.get("reason"))
            if msg.get("t") == "ping":
                await self.send({"t": "pong", "nonce": msg["nonce"]})
        return None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()

    async def aclose(self) -> None:
        self.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 1.0)


async def end_all(tasks: list[asyncio.Task[None]], peers: list[WirePeer]) -> None:
    """An attack's teardown: its per-peer tasks cancelled and awaited, then its peers closed."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for peer in peers:
        await peer.aclose()


async def open_session(t: Target, source_ip: str, key: AttackKey, wait_s: float) -> WirePeer | None:
    """An authenticated connection the node kept open for ``wait_s`` (a ban says bye at
    once), or None when it refused (whatever was opened is closed again)."""
    peer = None
    try:
        peer = await WirePeer.connect(t, source_ip)
        await peer.handshake(key, t)
        if await peer.refused_after_open(wait_s) is None:
            return peer
    except (Refused, OSError, TimeoutError, ssl.SSLError):
        pass
    if peer is not None:
        await peer.aclose()
    return None


async def try_handshake(t: Target, source_ip: str, key: AttackKey) -> str | None:
    """Can ``key`` from ``source_ip`` get an open connection? None if yes, else the refusal."""
    try:
        peer = await WirePeer.connect(t, source_ip)
    except (OSError, TimeoutError, ssl.SSLError) as e:
        return f"connect failed: {e!r}"
    try:
        await peer.handshake(key, t)
        return await peer.refused_after_open(1.0)
    except (Refused, OSError, ssl.SSLError) as e:
        return str(e) or type(e).__name__
    finally:
        await peer.aclose()
