"""A client of the reference node that speaks only its public interfaces (DESIGN.md).

- REST: ``/status``, ``/peers``, ``/metrics``, ``/block/{h}``, ``/message/{id}``, ``POST /tx``
  over HTTP/1.1 keep-alive. The node binds its API to 127.0.0.1 *inside its namespace*, so the
  socket is created in that namespace (`netns.run_in`) and then used from the caller's thread.
- Wire format: signed transactions and the gossip message id of a block, from the node's
  documented canonical encoding (msgpack arrays of the struct fields in schema order; tx
  signature over ``b"netdiag-node/tx/v1\\0" + msgpack([sender, nonce, timestamp_ms, payload])``;
  gossip message id = SHA-256 of the published bytes). tests/unit/bench checks these against
  the node's own encoder.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import socket
import time
from dataclasses import dataclass
from typing import Any

import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from netdiag.kernel import netns

TX_DOMAIN = b"netdiag-node/tx/v1\x00"
BLOCK_VERSION = 1
_enc = msgspec.msgpack.Encoder()


class NodeUnavailable(Exception):
    """The node's API did not answer (down, restarting, not yet listening)."""


@dataclass
class NodeApi:
    """Keep-alive HTTP client to one node's REST API. Not thread-safe: one per thread."""

    netns_name: str | None
    port: int
    host: str = "127.0.0.1"
    timeout_s: float = 3.0
    _conn: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        def make() -> socket.socket:
            s = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return s

        try:
            sock = netns.run_in(self.netns_name, make)
        except OSError as e:
            raise NodeUnavailable(f"{self.host}:{self.port}: {e}") from e
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
        conn.sock = sock  # already connected, in the node's namespace
        return conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

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
                    raise NodeUnavailable(f"{method} {path}: {e}") from e
        raise AssertionError("unreachable")

    def get_json(self, path: str) -> Any:
        status, body = self.request("GET", path)
        if status == 404:
            return None
        if status != 200:
            raise NodeUnavailable(f"GET {path}: HTTP {status}: {body[:200]!r}")
        return json.loads(body)

    def metrics_text(self) -> str:
        status, body = self.request("GET", "/metrics")
        if status != 200:
            raise NodeUnavailable(f"GET /metrics: HTTP {status}")
        return body.decode()

    def post_tx(self, tx: dict[str, Any]) -> str | None:
        """POST /tx; the txid (= gossip message id) when the node accepted it."""
        status, body = self.request("POST", "/tx", tx)
        if status not in (200, 202):
            return None
        doc = json.loads(body)
        return str(doc["txid"]) if doc.get("accepted", True) else None


class TxSigner:
    """Signs load transactions with one throwaway Ed25519 key (the node accepts any sender)."""

    def __init__(self, seed: bytes) -> None:
        self.key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(seed).digest())
        self.sender = self.key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.nonce = 0

    def next_tx(
        self, payload: bytes, timestamp_ms: int | None = None
    ) -> tuple[dict[str, Any], str]:
        """(POST /tx body, its txid hex)."""
        ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        nonce = self.nonce
        self.nonce += 1
        sig = self.key.sign(TX_DOMAIN + _enc.encode((self.sender, nonce, ts, payload)))
        txid = hashlib.sha256(_enc.encode((self.sender, nonce, ts, payload, sig))).hexdigest()
        body = {
            "sender": self.sender.hex(),
            "nonce": nonce,
            "timestamp_ms": ts,
            "payload": payload.hex(),
            "signature": sig.hex(),
        }
        return body, txid


def block_message_id(block: dict[str, Any], network_id: str) -> str:
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


def metric_sum(metrics: dict[str, float], name: str, **labels: str) -> float:
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
