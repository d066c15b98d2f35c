"""Producer rotation: which validator may produce height h in round r.

The entropy is the hash of an agreed block — the last block of the previous epoch (genesis for
epoch 0) — expanded by ChaCha20, a CSPRNG. Never local randomness: every honest node computes
the same producer. Round r > 0 exists for liveness: if the round-0 producer stays silent for a
slot, the round-1 producer may step in, and so on.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms


def epoch_seed_height(height: int, epoch_length: int) -> int:
    """Height of the block whose hash seeds the producer draw for ``height`` (>= 1)."""
    return ((height - 1) // epoch_length) * epoch_length


def _uniform(seed_hash: bytes, height: int, round_: int, n: int) -> int:
    # ChaCha20 keyed by the agreed hash; the 16-byte nonce carries (height, round) so each slot
    # gets an independent stream. Rejection sampling keeps the draw exactly uniform.
    nonce = height.to_bytes(8, "little") + round_.to_bytes(8, "little")
    stream = Cipher(algorithms.ChaCha20(seed_hash, nonce), mode=None).encryptor()
    limit = (1 << 64) - ((1 << 64) % n)
    while True:
        x = int.from_bytes(stream.update(bytes(8)), "little")
        if x < limit:
            return x % n


def producer_for(validators: list[bytes], seed_hash: bytes, height: int, round_: int) -> bytes:
    return validators[_uniform(seed_hash, height, round_, len(validators))]


def round_for(parent_ts_ms: int, ts_ms: int, slot_ms: int) -> int:
    """A block stamped ts belongs to round floor((ts - parent_ts) / slot) - 1 (>= 0 if valid)."""
    return (ts_ms - parent_ts_ms) // slot_ms - 1
