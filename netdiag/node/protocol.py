"""Sans-I/O protocol core: bytes in, events out; messages in, bytes out.

Framing: a 4-byte big-endian length, then that many bytes of msgpack. A length above the cap is
rejected as soon as the 4 bytes arrive (nothing is buffered for it). Every malformed input ends
in a ``Violation`` event — this module never raises on peer input — and the transport decides
what to do (score, disconnect, ban). Nothing here touches sockets, clocks or the event loop.

Handshake (both sides send Hello at once, then Auth):
    A -> B  Hello(network, genesis, version, node_id_A, nonce_A, ...)
    B -> A  Hello(...nonce_B...)            A, B check network, genesis, version, not self
Version: each Hello carries the highest protocol version its sender speaks; the connection
speaks the lower of the two (``PeerProtocol.version``); below MIN_PROTOCOL_VERSION is refused.
    A -> B  Auth(sig_A(transcript(nonce_B, node_id_A, node_id_B)))
    B -> A  Auth(sig_B(transcript(nonce_A, node_id_B, node_id_A)))
The signature covers the peer's fresh nonce, so a recorded Auth is useless on another
connection (replay), and both ids, so it cannot be reflected back.
"""

from __future__ import annotations

import enum
import os
import struct
from dataclasses import dataclass

import msgspec

from netdiag.node import crypto
from netdiag.node.crypto import Identity
from netdiag.node.messages import (
    MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
    Auth,
    Disconnect,
    Hello,
    Message,
)

LEN = struct.Struct(">I")
DEFAULT_MAX_FRAME = 4 << 20  # above the largest block (1 MiB) plus a sync batch's overhead
HANDSHAKE_DOMAIN = b"netdiag-node/handshake/v1\x00"
NONCE_LEN = 32
HANDSHAKE_MAX_FRAME = 4096  # Hello and Auth are < 300 bytes

_decoder: msgspec.msgpack.Decoder[Message] = msgspec.msgpack.Decoder(Message)
_encoder = msgspec.msgpack.Encoder()


def encode_frame(msg: Message) -> bytes:
    body = _encoder.encode(msg)
    return LEN.pack(len(body)) + body


def handshake_transcript(
    network_id: str, genesis_hash: bytes, peer_nonce: bytes, signer: bytes, verifier: bytes
) -> bytes:
    return HANDSHAKE_DOMAIN + _encoder.encode(
        (network_id, genesis_hash, peer_nonce, signer, verifier)
    )


# -- events --------------------------------------------------------------------------------


@dataclass(frozen=True)
class HandshakeComplete:
    peer_id: bytes
    hello: Hello


@dataclass(frozen=True)
class MessageReceived:
    message: Message
    size: int  # frame bytes, for accounting


@dataclass(frozen=True)
class Violation:
    """The peer broke the protocol. ``fatal``: the connection must be closed."""

    reason: str  # stable metric label: frame_too_large, decode, handshake_*, unexpected
    detail: str
    fatal: bool = True


@dataclass(frozen=True)
class PeerClosed:
    reason: str


Event = HandshakeComplete | MessageReceived | Violation | PeerClosed


class FrameDecoder:
    """Reassembles frames from arbitrary chunks; enforces the size cap before buffering."""

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        self.completed = 0  # frames reassembled so far (a new partial frame is a new count)

    @property
    def buffered(self) -> int:
        return len(self._buf)

    @property
    def pending_len(self) -> int:
        """The declared length of the frame in progress (0: none, or its prefix incomplete)."""
        return LEN.unpack_from(self._buf)[0] if len(self._buf) >= LEN.size else 0

    def feed(self, data: bytes, max_frames: int | None = None) -> list[bytes] | Violation:
        self._buf += data
        frames: list[bytes] = []
        while len(self._buf) >= LEN.size and (max_frames is None or len(frames) < max_frames):
            (n,) = LEN.unpack_from(self._buf)
            if n > self.max_frame:
                return Violation("frame_too_large", f"length prefix {n} > cap {self.max_frame}")
            if n == 0:
                return Violation("decode", "empty frame")
            if len(self._buf) < LEN.size + n:
                break
            frames.append(bytes(self._buf[LEN.size : LEN.size + n]))
            del self._buf[: LEN.size + n]
            self.completed += 1
        return frames


def decode_message(frame: bytes) -> Message | Violation:
    try:
        return _decoder.decode(frame)
    except msgspec.ValidationError as e:
        return Violation("schema", str(e))
    except msgspec.DecodeError as e:
        return Violation("decode", str(e))


class State(enum.Enum):
    AWAIT_HELLO = "await_hello"
    AWAIT_AUTH = "await_auth"
    OPEN = "open"
    CLOSED = "closed"


class PeerProtocol:
    """One connection's protocol state. The owner calls ``start`` once, feeds received bytes to
    ``receive_data`` and writes whatever ``data_to_send`` returns."""

    def __init__(
        self,
        identity: Identity,
        network_id: str,
        genesis_hash: bytes,
        listen_port: int = 0,
        max_frame: int = DEFAULT_MAX_FRAME,
        nonce: bytes | None = None,
        agent: str = "netdiag-node/1",
        version: int = PROTOCOL_VERSION,
    ) -> None:
        self.identity = identity
        self.network_id = network_id
        self.genesis_hash = genesis_hash
        self.listen_port = listen_port
        self.agent = agent
        self.nonce = nonce if nonce is not None else os.urandom(NONCE_LEN)
        # Until the peer is authenticated only handshake frames are legal, and they are tiny:
        # a stranger must not make us buffer megabytes.
        self.max_frame = max_frame
        self.decoder = FrameDecoder(min(max_frame, HANDSHAKE_MAX_FRAME))
        self.state = State.AWAIT_HELLO
        self.peer_hello: Hello | None = None
        self.max_version = version  # announced in our Hello (tests speak older versions)
        self.version = version  # negotiated at the peer's Hello: the lower of the two
        self._out = bytearray()
        self.started = False
        self._bye_sent = False
        self._peer_said_bye = False

    # -- outbound --------------------------------------------------------------------------

    def start(self) -> None:
        self.started = True
        self._out += encode_frame(
            Hello(
                self.network_id,
                self.genesis_hash,
                self.max_version,
                self.identity.node_id,
                self.nonce,
                self.listen_port,
                self.agent,
            )
        )

    def send(self, msg: Message) -> None:
        if self.state is not State.OPEN:
            raise RuntimeError(f"cannot send {type(msg).__name__} in state {self.state.value}")
        self._out += encode_frame(msg)

    def close(self, reason: str) -> None:
        """Queue one Disconnect carrying the reason — also for a rejected handshake, so the
        peer learns why (network, genesis, version, auth) — and stop."""
        if self.started and not self._bye_sent and not self._peer_said_bye:
            self._out += encode_frame(Disconnect(reason[:200]))
            self._bye_sent = True
        self.state = State.CLOSED

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    # -- inbound ---------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        if self.state is State.CLOSED:
            return []
        events: list[Event] = []
        pending = data
        while True:
            # Until the handshake completes take one frame at a time: Auth raises the size
            # cap, and a large frame that follows Auth in the same read must meet the new cap.
            limit = None if self.state is State.OPEN else 1
            frames = self.decoder.feed(pending, limit)
            pending = b""
            if isinstance(frames, Violation):
                return self._fail(events, frames)
            for frame in frames:
                msg = decode_message(frame)
                if isinstance(msg, Violation):
                    return self._fail(events, msg)
                ev = self._handle(msg, len(frame) + LEN.size)
                if ev is not None:
                    events.append(ev)
                    if isinstance(ev, Violation | PeerClosed):
                        self.state = State.CLOSED
                        return events
            if limit is None or not frames:
                return events

    def _fail(self, events: list[Event], v: Violation) -> list[Event]:
        self.state = State.CLOSED
        events.append(v)
        return events

    def _handle(self, msg: Message, size: int) -> Event | None:
        if isinstance(msg, Disconnect):
            self._peer_said_bye = True
            return PeerClosed(msg.reason)
        if self.state is State.AWAIT_HELLO:
            if not isinstance(msg, Hello):
                return Violation("handshake_order", f"{type(msg).__name__} before Hello")
            return self._on_hello(msg)
        if self.state is State.AWAIT_AUTH:
            if not isinstance(msg, Auth):
                return Violation("handshake_order", f"{type(msg).__name__} before Auth")
            return self._on_auth(msg)
        if isinstance(msg, Hello | Auth):
            return Violation("handshake_replay", f"{type(msg).__name__} after the handshake")
        return MessageReceived(msg, size)

    def _on_hello(self, h: Hello) -> Event | None:
        if h.network_id != self.network_id:
            return Violation(
                "handshake_network",
                f"peer is on network {h.network_id!r}, we are on {self.network_id!r}",
            )
        if h.genesis_hash != self.genesis_hash:
            return Violation(
                "handshake_genesis",
                f"peer genesis {h.genesis_hash.hex()[:16]}… "
                f"differs from ours {self.genesis_hash.hex()[:16]}…",
            )
        if h.version < MIN_PROTOCOL_VERSION:
            return Violation(
                "handshake_version",
                f"peer speaks protocol {h.version}, we speak "
                f"{MIN_PROTOCOL_VERSION} to {self.max_version}",
            )
        if len(h.node_id) != crypto.PUBKEY_LEN or len(h.nonce) != NONCE_LEN:
            return Violation("handshake_format", "node_id must be 32 bytes and nonce 32 bytes")
        if h.node_id == self.identity.node_id:
            return Violation("handshake_self", "connected to ourselves")
        if h.nonce == self.nonce:
            return Violation("handshake_replay", "peer echoed our nonce")
        if not 0 <= h.listen_port < 65536:
            return Violation("handshake_format", f"listen_port {h.listen_port} out of range")
        self.peer_hello = h
        self.version = min(self.max_version, h.version)
        if not self.started:
            self.start()
        sig = self.identity.sign(
            handshake_transcript(
                self.network_id, self.genesis_hash, h.nonce, self.identity.node_id, h.node_id
            )
        )
        self._out += encode_frame(Auth(sig))
        self.state = State.AWAIT_AUTH
        return None

    def _on_auth(self, a: Auth) -> Event:
        h = self.peer_hello
        assert h is not None
        transcript = handshake_transcript(
            self.network_id, self.genesis_hash, self.nonce, h.node_id, self.identity.node_id
        )
        if not crypto.verify(h.node_id, a.signature, transcript):
            return Violation(
                "handshake_auth",
                f"peer cannot prove key {h.node_id.hex()[:16]}…: "
                "signature over our nonce does not verify",
            )
        self.state = State.OPEN
        self.decoder.max_frame = self.max_frame
        return HandshakeComplete(h.node_id, h)
