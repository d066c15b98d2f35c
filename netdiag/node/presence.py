"""Validator presence: signed, gossiped "I am alive" beacons behind the production quorum.

A validator may produce only while it hears from a strict majority of the validator set
(itself included). Hearing is either a direct connection or a fresh presence beacon that
reached us through the gossip mesh. Beacons are signed by the validator's key and carry the
genesis hash and a timestamp, so a non-validator cannot fake one, a beacon of another network
does not count, and an old beacon (replayed, or the last one before a partition) expires after
``window_s``. Two sides of a partition cannot both hear a majority for longer than that window.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from netdiag.node.crypto import Identity, verify

_DOMAIN = b"netdiag-node/presence/v1\x00"


class Beacon(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    validator: bytes  # Ed25519 public key of a genesis validator
    timestamp_ms: int  # wall clock of the sender; freshness is checked against ours
    signature: bytes


def _signed_bytes(genesis_hash: bytes, validator: bytes, timestamp_ms: int) -> bytes:
    return _DOMAIN + msgspec.msgpack.encode((genesis_hash, validator, timestamp_ms))


def make_beacon(identity: Identity, genesis_hash: bytes, timestamp_ms: int) -> bytes:
    sig = identity.sign(_signed_bytes(genesis_hash, identity.node_id, timestamp_ms))
    return msgspec.msgpack.encode(Beacon(identity.node_id, timestamp_ms, sig))


class Presence:
    """Which validators we heard from recently (clock seconds of the last fresh beacon)."""

    def __init__(
        self,
        validators: list[bytes],
        genesis_hash: bytes,
        window_s: float,
        clock: Callable[[], float],
    ) -> None:
        self.validators = set(validators)
        self.genesis_hash = genesis_hash
        self.window_s = window_s
        self.clock = clock
        self.heard: dict[bytes, float] = {}

    def on_beacon(self, data: bytes, now_ms: int) -> tuple[str, str]:
        """Check a gossiped beacon. Returns (verdict accept|ignore|reject, why)."""
        try:
            b = msgspec.msgpack.decode(data, type=Beacon)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            return "reject", f"beacon does not decode: {e}"
        if b.validator not in self.validators:
            return "reject", "beacon from a key that is not a genesis validator"
        if not verify(
            b.validator, b.signature, _signed_bytes(self.genesis_hash, b.validator, b.timestamp_ms)
        ):
            return "reject", "beacon signature does not verify"
        if abs(now_ms - b.timestamp_ms) > self.window_s * 1000:
            return "ignore", "beacon is not fresh"  # clock skew or a replay: no penalty
        self.heard[b.validator] = max(self.heard.get(b.validator, 0.0), self.clock())
        return "accept", ""

    def reachable(self, connected: set[bytes], own: bytes) -> set[bytes]:
        """Validators other than us that we are connected to or heard from within the window."""
        cutoff = self.clock() - self.window_s
        for v in [v for v, t in self.heard.items() if t < cutoff]:
            del self.heard[v]
        return ((connected & self.validators) | set(self.heard)) - {own}
