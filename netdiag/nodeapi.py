"""The one client of the reference node's public interfaces, used by bench, lab, trace and cli.

- REST: ``/status``, ``/peers``, ``/metrics``, ``/block/{h}``, ``/message/{id}``, ``POST /tx``
  over HTTP/1.1 keep-alive. Namespace-aware: a lab node's API listens on an address that
  exists only inside its namespace, so the socket is created there (`netns.run_in`) and then
  used from the caller's thread.
- Wire format: signed transactions and the gossip message id of a block, from the node's
  documented canonical encoding (msgpack arrays of the struct fields in schema order; tx
  signature over ``b"netdiag-node/tx/v1\\0" + msgpack([sender, nonce, timestamp_ms, payload])``;
  gossip message id = SHA-256 of the published bytes). tests/unit/bench checks these against
  the node's own encoder.
- The socket-cookie join: the node's ``/peers`` names the cookie ``socket_cookie`` on the wire
  (its public API, kept for other consumers); every tool calls it ``sock_cookie``, the name
  tcp:tcp_probe and the trace rows use, and `peers_by_sock_cookie` is the one join.

This module imports nothing of netdiag but the kernel layer (DESIGN.md: tools -> nodeapi).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict

import msgspec

from netdiag.kernel import netns

TX_DOMAIN = b"netdiag-node/tx/v2\x00"
BLOCK_VERSION = 1
P2P_PORT = 7600  # the node's default P2P port (`netdiag node run --listen`)
API_PORT = 7601  # the node's default REST API port (`netdiag node run --api`)
WIRE_COOKIE = "socket_cookie"  # the /peers field name on the wire
_enc = msgspec.msgpack.Encoder()


class NodeUnavailable(ConnectionError):
    """The node's API did not answer (down, restarting, not yet listening) or answered badly
    (an OSError, so callers that poll a starting node treat both alike)."""


class Peer(TypedDict, total=False):
    """One entry of ``/peers`` as tools see it (``sock_cookie`` normalised from the wire)."""

    peer_id: str
    address: str
    direction: str
    mesh: Any
    score: float
    sock_cookie: int
    height: int


def parse_address(text: str, default_port: int = API_PORT) -> tuple[str, int]:
    """ "HOST:PORT", "HOST" or "http://HOST:PORT[/]" -> (host, port); ValueError otherwise."""
    rest = text.strip()
    for scheme in ("http://", "https://"):
        if rest.startswith(scheme):
            rest = rest[len(scheme) :]
            break
    else:
        if "://" in rest:
            raise ValueError(f"{text!r}: only http:// node APIs are supported")
    rest = rest.rstrip("/")
    if "/" in rest:
        raise ValueError(f"{text!r}: give the API's address, not a path")
    host, sep, port = rest.rpartition(":")
    if not sep:
        host, port = rest, str(default_port)
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host, int(port)


@dataclass
class NodeApi:
    """Keep-alive HTTP client to one node's REST API. Not thread-safe: one per thread."""

    netns_name: str | None
    port: int = API_PORT
    host: str = "127.0.0.1"
    timeout_s: float = 3.0
    _conn: http.client.HTTPConnection | None = field(default=None, repr=False)

    @classmethod
    def at(cls, address: str, netns_name: str | None = None, timeout_s: float = 3.0) -> NodeApi:
        """Client for "HOST:PORT" or "http://HOST:PORT" (ValueError if it is neither)."""
        host, port = parse_address(address)
        return cls(netns_name, port, host, timeout_s)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _connect(self) -> http.client.HTTPConnection:
        def make() -> socket.socket:
            s = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return s

        try:
            sock = netns.run_in(self.netns_name, make)
        except OSError as e:
            raise NodeUnavailable(f"{self.url}: {e}") from e
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
        conn.sock = sock  # already connected, in the node's namespace
        return conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> NodeApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        for attempt in range(2):  # one retry: a keep-alive socket may have been closed idle
            if self._conn is None:
                self._conn = self._connect()
            try:
                self._conn.request(method, path, body=data, headers=headers)
                resp = self._conn.getresponse()
                return resp.status, resp.read()
            except (OSError, http.client.HTTPException) as e:
                self.close()
                if attempt:
                    raise NodeUnavailable(f"{method} {self.url}{path}: {e}") from e
        raise AssertionError("unreachable")

    def get_json(self, path: str) -> Any:
        """The decoded body; None on 404 (no such block/message)."""
        status, body = self.request("GET", path)
        if status == 404:
            return None
        if status != 200:
            raise NodeUnavailable(f"GET {self.url}{path}: HTTP {status}: {body[:200]!r}")
        try:
            return json.loads(body)
        except json.JSONDecodeError as e:
            raise NodeUnavailable(f"GET {self.url}{path} did not return JSON: {e}") from e

    def status(self) -> dict[str, Any]:
        doc = self.get_json("/status")
        if not isinstance(doc, dict):
            raise NodeUnavailable(f"GET {self.url}/status: expected an object")
        return doc

    def peers(self) -> list[Peer]:
        return normalise_peers(self.get_json("/peers"))

    def block(self, ref: int | str) -> dict[str, Any] | None:
        doc = self.get_json(f"/block/{ref}")
        return doc if isinstance(doc, dict) else None

    def message(self, message_id: str) -> dict[str, Any] | None:
        doc = self.get_json(f"/message/{message_id}")
        return doc if isinstance(doc, dict) else None

    def metrics_text(self) -> str:
        status, body = self.request("GET", "/metrics")
        if status != 200:
            raise NodeUnavailable(f"GET {self.url}/metrics: HTTP {status}")
        return body.decode()

    def metrics(self) -> dict[str, float]:
        return parse_metrics(self.metrics_text())

    def submit_tx(self, tx: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        """POST /tx: (HTTP status, the node's answer — {"txid", "accepted"} or {"error"})."""
        status, body = self.request("POST", "/tx", dict(tx))
        try:
            doc = json.loads(body)
        except json.JSONDecodeError:
            doc = {"error": body[:200].decode(errors="replace")}
        return status, doc if isinstance(doc, dict) else {"error": str(doc)}

    def post_tx(self, tx: Mapping[str, Any]) -> str | None:
        """POST /tx; the txid (= gossip message id) when the node accepted it."""
        return accepted_txid(*self.submit_tx(tx))


def accepted_txid(status: int, doc: Any) -> str | None:
    """The txid of a POST /tx answer that says accepted (HTTP 200/202), else None."""
    if status not in (200, 202) or not isinstance(doc, dict) or not doc.get("accepted", True):
        return None
    return str(doc["txid"]) if "txid" in doc else None


def normalise_peers(doc: Any) -> list[Peer]:
    """``/peers`` (a list, or {"peers": [...]}) -> entries with ``sock_cookie`` (int or absent)
    and ``peer_id`` (from ``id`` for nodes that call it so)."""
    items = doc.get("peers", []) if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise NodeUnavailable("/peers: expected a list of peers")
    out: list[Peer] = []
    for p in items:
        if not isinstance(p, dict):
            continue
        peer: dict[str, Any] = {k: v for k, v in p.items() if k != WIRE_COOKIE}
        raw = p.get("sock_cookie", p.get(WIRE_COOKIE))
        with contextlib.suppress(TypeError, ValueError):
            if raw is not None:
                peer["sock_cookie"] = int(raw)
        if "peer_id" not in peer and "id" in peer:
            peer["peer_id"] = peer["id"]
        out.append(peer)  # type: ignore[arg-type]
    return out


def peers_by_sock_cookie(peers: Iterable[Peer]) -> dict[int, Peer]:
    """The one socket-cookie join key: sock_cookie -> peer (entries without one are skipped)."""
    return {p["sock_cookie"]: p for p in peers if "sock_cookie" in p}


class TxSigner:
    """Signs load transactions with one throwaway Ed25519 key: transfers of ``amount`` (0 by
    default — an unfunded key may move nothing) to ``to``, nonces 0, 1, 2, …"""

    def __init__(self, seed: bytes, to: bytes | None = None, amount: int = 0) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        self.key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(seed).digest())
        self.sender = self.key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.to = to if to is not None else hashlib.sha256(b"netdiag-load-to:" + seed).digest()
        self.amount = amount
        self.nonce = 0

    def next_tx(
        self, payload: bytes, timestamp_ms: int | None = None
    ) -> tuple[dict[str, Any], str]:
        """(POST /tx body, its txid hex)."""
        ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        nonce = self.nonce
        self.nonce += 1
        return transfer_body(self.key, self.sender, nonce, ts, payload, self.to, self.amount)


def transfer_body(
    key: Any, sender: bytes, nonce: int, ts: int, payload: bytes, to: bytes, amount: int
) -> tuple[dict[str, Any], str]:
    """A signed transfer as a POST /tx body and its txid hex (the node's model.Tx encoding)."""
    sig = key.sign(TX_DOMAIN + _enc.encode((sender, nonce, ts, payload, to, amount)))
    txid = hashlib.sha256(_enc.encode((sender, nonce, ts, payload, sig, to, amount))).hexdigest()
    body = {
        "sender": sender.hex(),
        "nonce": nonce,
        "timestamp_ms": ts,
        "payload": payload.hex(),
        "signature": sig.hex(),
        "to": to.hex(),
        "amount": amount,
    }
    return body, txid


def block_message_id(block: Mapping[str, Any], network_id: str) -> str:
    """Gossip message id of a block from its /block JSON (the node's id when it gives one)."""
    if isinstance(block.get("message_id"), str):
        return str(block["message_id"])
    txs = [
        (
            bytes.fromhex(t["sender"]),
            int(t["nonce"]),
            int(t["timestamp_ms"]),
            bytes.fromhex(t["payload"]),
            bytes.fromhex(t["signature"]),
            bytes.fromhex(t.get("to", "")),
            int(t.get("amount", 0)),
        )
        for t in block.get("txs", [])
    ]
    header = (
        int(block.get("version", BLOCK_VERSION)),
        network_id,
        int(block["height"]),
        bytes.fromhex(block["prev_hash"]),
        int(block["timestamp_ms"]),
        bytes.fromhex(block["producer"]),
        bytes.fromhex(block["tx_root"]),
        int(block.get("tx_count", len(txs))),
        bytes.fromhex(block.get("reveal", "")),  # epoch entropy (empty without anchors)
        bytes.fromhex(block.get("mix", "")),
        bytes.fromhex(block.get("state_root", "")),  # account state (node/state.py)
    )
    raw = _enc.encode(
        (header, bytes.fromhex(block["hash"]), bytes.fromhex(block["signature"]), txs)
    )
    return hashlib.sha256(raw).hexdigest()


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus exposition -> {"name{label=value,…}": value} (samples, labels sorted)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    with contextlib.suppress(ValueError):
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}" if labels else s.name] = float(s.value)
    return out


def metric_sum(metrics: Mapping[str, float], name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for key, v in metrics.items():
        base, _, rest = key.partition("{")
        if base != name:
            continue
        have = dict(p.split("=", 1) for p in rest.rstrip("}").split(",") if "=" in p)
        if all(have.get(k) == val for k, val in labels.items()):
            total += v
    return total
