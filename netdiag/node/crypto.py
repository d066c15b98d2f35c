"""Ed25519 identities: key files, deterministic lab keys, sign and verify."""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from netdiag.node.errors import ConfigError

PUBKEY_LEN = 32
SIG_LEN = 64
# Encodings of the 8 points of small order (sign bit cleared; y >= p spellings included), as in
# libsodium's blocklist. OpenSSL's Ed25519 verify accepts them: with the identity as key and as R
# and S = 0, "01 00..00" verifies ANY message — anyone could sign for that sender or node id.
# Refused as a key and as a signature's R (a rule every node applies: crypto.verify_raw).
SMALL_ORDER = frozenset(
    bytes.fromhex(h)
    for h in (
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    )
)


def small_order(point: bytes) -> bool:
    """Whether a 32-byte point encoding (either sign bit) is one of the small-order points."""
    return point[:31] + bytes([point[31] & 0x7F]) in SMALL_ORDER


@dataclass(frozen=True)
class Identity:
    """A node's or validator's key pair; ``node_id`` is the raw 32-byte public key."""

    private: Ed25519PrivateKey
    node_id: bytes

    @classmethod
    def from_private(cls, key: Ed25519PrivateKey) -> Identity:
        raw = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return cls(key, raw)

    @classmethod
    def generate(cls) -> Identity:
        return cls.from_private(Ed25519PrivateKey.generate())

    def sign(self, data: bytes) -> bytes:
        return self.private.sign(data)

    def private_pem(self) -> bytes:
        return self.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def lab_identity(seed: str, index: int) -> Identity:
    """Deterministic validator key for labs ONLY: anyone who knows the seed has the key."""
    secret = hashlib.sha256(f"netdiag-lab-validator:{seed}:{index}".encode()).digest()
    return Identity.from_private(Ed25519PrivateKey.from_private_bytes(secret))


_batch = threading.local()  # (key, signature, message) triples a batch verified (sigpool.py)


@contextlib.contextmanager
def preverified(ok: Iterable[tuple[bytes, bytes, bytes]]) -> Iterator[None]:
    """Within the block, ``verify`` answers True at once for exactly these triples, which a
    batch (sigpool.SigPool) verified by this same function; anything else is verified here."""
    prev = getattr(_batch, "ok", None)
    _batch.ok = set(ok) | (prev or set())
    try:
        yield
    finally:
        _batch.ok = prev


def verify(pubkey: bytes, signature: bytes, data: bytes) -> bool:
    ok = getattr(_batch, "ok", None)
    if ok and (pubkey, signature, data) in ok:
        return True
    return verify_raw(pubkey, signature, data)


def verify_raw(pubkey: bytes, signature: bytes, data: bytes) -> bool:
    """The one signature rule (``verify`` without a batch's results; sigpool's workers)."""
    if len(pubkey) != PUBKEY_LEN or len(signature) != SIG_LEN:
        return False
    if small_order(pubkey) or small_order(signature[:32]):
        return False
    try:
        Ed25519PublicKey.from_public_bytes(pubkey).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


def save_identity(identity: Identity, path: Path) -> None:
    """Write the private key as PKCS#8 PEM, readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(identity.private_pem())


def load_identity(path: Path) -> Identity:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read key file {path}: {e.strerror}") from e
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"key file {path} is not an unencrypted PEM private key: {e}") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"key file {path} holds a {type(key).__name__}, not an Ed25519 key")
    return Identity.from_private(key)
