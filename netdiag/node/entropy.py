"""Epoch entropy no single validator can predict or grind: hash-chain commit–reveal.

Commitment. At genesis every validator draws a 32-byte secret ``s`` from the OS CSPRNG and
publishes its anchor ``H^span(s)`` in the genesis (``entropy_anchors``, one per validator).
The chain ``x_h = H^(span - h)(s)`` is its sequence of reveals: ``H^h(x_h)`` is the anchor, and
knowing ``x_h`` (published at height h) tells nothing about ``x_{h+1}`` (a preimage).

Reveal. A block at height h carries its producer's ``x_h`` (``reveal``) and
``mix = H(domain || seed(parent) || reveal)``, where ``seed(b)`` is ``b.mix`` (the genesis
block's own hash for block 0). Both are in the signed header; every node checks the reveal
against the anchor and recomputes the mix. The producer draw for an epoch is seeded by the
mix of the epoch's boundary block (``schedule.epoch_seed_height``), where it used to be that
block's hash.

Why nobody can predict or grind it. A reveal is fixed by the commitment made at genesis: the
producer has no free bits (a block hash, by contrast, could be varied through the timestamp
or the transactions until it drew a favourable schedule). The seed of the next epoch depends on
the reveal of the last block of this one, which no one but its producer knows before it is
published. Withheld reveals: a block without its producer's valid reveal is invalid
(``BadEntropy``, reason ``entropy``), so the only way to withhold is to skip the slot — the
next round's producer then takes the height with its own reveal. That leaves the boundary
producer one bit of influence (its reveal or the next round's), bought with its block, and no
way to pick among more outcomes. All of it is checked again by the 2/3 entropy check at
every boundary (entropy_check.py), which compares these mixes.

Networks whose genesis has no anchors (older files, ``lab_genesis(entropy=False)`` in unit
tests) keep the previous rule: empty reveal and mix, seeded by the boundary block's hash.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

ENTROPY_DOMAIN = b"netdiag-node/entropy/v1\x00"
LAB_SPAN = 1 << 16  # heights a lab validator can reveal for (a lab at 500 ms slots: 9 h)
DEFAULT_SPAN = 1 << 20  # a new network at 1 s slots: 12 days, then it must be re-anchored
STRIDE = 256  # producer keeps every STRIDE-th element: <= STRIDE hashes per reveal


def _h(x: bytes) -> bytes:
    return hashlib.sha256(x).digest()


def iterate(x: bytes, n: int) -> bytes:
    for _ in range(n):
        x = _h(x)
    return x


def next_mix(parent_seed: bytes, reveal: bytes) -> bytes:
    return _h(ENTROPY_DOMAIN + parent_seed + reveal)


def new_secret() -> bytes:
    return os.urandom(32)


def lab_secret(seed: str, index: int) -> bytes:
    """LAB ONLY, like lab keys: anyone who knows the seed can compute every reveal."""
    return _h(f"netdiag-lab-entropy:{seed}:{index}".encode())


class HashChain:
    """A producer's reveals, from its secret. Keeps every STRIDE-th element from the top."""

    def __init__(self, secret: bytes, span: int) -> None:
        if len(secret) != 32 or span < 1:
            raise ValueError("an entropy secret is 32 bytes and the span at least 1")
        self.span = span
        self._marks: list[bytes] = []  # _marks[j] = H^(j * STRIDE)(secret)
        x = secret
        for i in range(span + 1):
            if i % STRIDE == 0:
                self._marks.append(x)
            if i < span:
                x = _h(x)
        self.anchor = x

    def reveal(self, height: int) -> bytes:
        """x_height = H^(span - height)(secret); ValueError past the span."""
        if not 1 <= height <= self.span:
            raise ValueError(f"height {height} is outside this entropy chain (1..{self.span})")
        depth = self.span - height
        j = depth // STRIDE
        return iterate(self._marks[j], depth - j * STRIDE)


class RevealCheck:
    """Verifies reveals against the genesis anchors, remembering the newest verified element
    per producer so a check costs the heights since that producer's last block."""

    def __init__(self, validators: Sequence[bytes], anchors: Sequence[bytes], span: int) -> None:
        self.anchors = dict(zip(validators, anchors, strict=True))
        self.span = span
        self._known: dict[bytes, tuple[int, bytes]] = {}

    def valid(self, producer: bytes, height: int, reveal: bytes) -> bool:
        anchor = self.anchors.get(producer)
        if anchor is None or len(reveal) != 32 or not 1 <= height <= self.span:
            return False
        known = self._known.get(producer)
        if known is not None and known[0] == height:
            return known[1] == reveal
        if known is not None and known[0] < height:
            ok = iterate(reveal, height - known[0]) == known[1]
        else:
            ok = iterate(reveal, height) == anchor
        if ok and (known is None or height > known[0]):
            self._known[producer] = (height, reveal)
        return ok


def secret_path(key_path: str) -> Path | None:
    """Where a validator's entropy secret lives by default: next to its key file."""
    return Path(key_path).with_suffix(".entropy") if key_path else None


def save_secret(secret: bytes, path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret.hex() + "\n")


def load_secret(path: Path) -> bytes:
    secret = bytes.fromhex(path.read_text().strip())
    if len(secret) != 32:
        raise ValueError(f"{path} does not hold a 32-byte hex secret")
    return secret
