"""Genesis: the network's parameters, validator set and deterministic block 0.

The genesis file is JSON. Block 0's ``tx_root`` commits to the canonical encoding of the whole
spec, so agreeing on the genesis hash (checked in every handshake) means agreeing on the
validator set and every consensus parameter.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import msgspec

from netdiag.node.crypto import PUBKEY_LEN, Identity, lab_identity, save_identity
from netdiag.node.entropy import HashChain, lab_secret, new_secret, save_secret
from netdiag.node.errors import ConfigError
from netdiag.node.model import BLOCK_VERSION, ZERO_HASH, Block, BlockHeader
from netdiag.node.state import genesis_ledger

GENESIS_DOMAIN = b"netdiag-node/genesis/v1\x00"


class ChainParams(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    epoch_length: int = 100  # blocks; producer entropy is re-seeded at every epoch boundary
    slot_ms: int = 1000  # minimum spacing of blocks and length of one producer round
    max_block_bytes: int = 1 << 20
    max_block_txs: int = 2000
    max_tx_bytes: int = 16 << 10
    max_future_ms: int = 5000  # a block's timestamp may be at most this far ahead of our clock


class GenesisSpec(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    network_id: str
    timestamp_ms: int
    validators: list[bytes]
    params: ChainParams
    # epoch entropy (entropy.py): one hash-chain anchor per validator and the chain length in
    # heights; no anchors = the older rule (epochs seeded by the boundary block's hash)
    entropy_anchors: list[bytes] = []
    entropy_span: int = 0
    # genesis balances (state.py), sorted by key: (account key, balance)
    allocations: list[tuple[bytes, int]] = []

    def state_root(self) -> bytes:
        return genesis_ledger(self.allocations).root()

    def block(self) -> Block:
        commitment = hashlib.sha256(GENESIS_DOMAIN + msgspec.msgpack.encode(self)).digest()
        header = BlockHeader(
            BLOCK_VERSION,
            self.network_id,
            0,
            ZERO_HASH,
            self.timestamp_ms,
            bytes(32),
            commitment,
            0,
            b"",
            b"",
            self.state_root(),
        )  # no reveal or mix: block 0's own hash seeds the first epoch
        return Block(header, header.compute_hash(), b"", [])

    def to_json(self) -> dict[str, object]:
        doc: dict[str, object] = {
            "network_id": self.network_id,
            "timestamp_ms": self.timestamp_ms,
            "validators": [v.hex() for v in self.validators],
            "params": msgspec.structs.asdict(self.params),
        }
        if self.entropy_anchors:
            doc["entropy_anchors"] = [a.hex() for a in self.entropy_anchors]
            doc["entropy_span"] = self.entropy_span
        if self.allocations:
            doc["allocations"] = {k.hex(): v for k, v in self.allocations}
        return doc


def parse_genesis(doc: object, source: str = "genesis") -> GenesisSpec:
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: expected a JSON object")
    try:
        validators = [bytes.fromhex(v) for v in doc["validators"]]
        params = ChainParams(**{str(k): int(x) for k, x in dict(doc.get("params", {})).items()})
        anchors = [bytes.fromhex(a) for a in doc.get("entropy_anchors", [])]
        allocs = sorted((bytes.fromhex(k), int(v)) for k, v in doc.get("allocations", {}).items())
        spec = GenesisSpec(
            str(doc["network_id"]),
            int(doc["timestamp_ms"]),
            validators,
            params,
            anchors,
            int(doc.get("entropy_span", 0)),
            allocs,
        )
    except (KeyError, ValueError, TypeError, msgspec.ValidationError) as e:
        raise ConfigError(f"{source}: malformed genesis ({e!r})") from e
    if not spec.validators:
        raise ConfigError(f"{source}: needs at least one validator")
    if any(len(v) != PUBKEY_LEN for v in spec.validators):
        raise ConfigError(f"{source}: every validator must be a 32-byte Ed25519 key in hex")
    if len(set(spec.validators)) != len(spec.validators):
        raise ConfigError(f"{source}: duplicate validator keys")
    if spec.params.epoch_length < 1 or spec.params.slot_ms < 10:
        raise ConfigError(f"{source}: epoch_length must be >= 1 and slot_ms >= 10")
    if spec.entropy_anchors and (
        len(spec.entropy_anchors) != len(spec.validators)
        or any(len(a) != 32 for a in spec.entropy_anchors)
        or spec.entropy_span < 1
    ):
        raise ConfigError(
            f"{source}: entropy_anchors must be one 32-byte hex anchor per validator, with "
            "entropy_span >= 1"
        )
    if any(len(k) != PUBKEY_LEN or not 0 <= v < 2**63 for k, v in spec.allocations):
        raise ConfigError(
            f"{source}: allocations map 32-byte account keys in hex to balances in [0, 2^63)"
        )
    return spec


def load_genesis(path: Path) -> GenesisSpec:
    try:
        doc = json.loads(path.read_text())
    except OSError as e:
        raise ConfigError(f"cannot read genesis file {path}: {e.strerror}") from e
    except json.JSONDecodeError as e:
        raise ConfigError(f"genesis file {path} is not JSON: {e}") from e
    return parse_genesis(doc, str(path))


def lab_genesis(
    validators: int,
    seed: str,
    network_id: str,
    timestamp_ms: int,
    params: ChainParams,
    entropy_span: int = 0,
    allocations: list[tuple[bytes, int]] | None = None,
) -> tuple[GenesisSpec, list[Identity]]:
    """LAB ONLY: keys (and, with ``entropy_span``, entropy secrets: entropy.lab_secret) derived
    from ``seed``. Without a span the network has no entropy anchors (the older seed rule)."""
    keys = [lab_identity(seed, i) for i in range(validators)]
    anchors = [
        HashChain(lab_secret(seed, i), entropy_span).anchor
        for i in range(validators)
        if entropy_span
    ]
    spec = GenesisSpec(
        network_id,
        timestamp_ms,
        [k.node_id for k in keys],
        params,
        anchors,
        entropy_span,
        sorted(allocations or []),
    )
    return spec, keys


def fresh_genesis(
    validators: int, network_id: str, timestamp_ms: int, params: ChainParams, entropy_span: int
) -> tuple[GenesisSpec, list[Identity], list[bytes]]:
    """A new network: every validator key and entropy secret from the OS CSPRNG (nobody can
    re-derive them). Returns the spec, the keys and the secrets."""
    keys = [Identity.generate() for _ in range(validators)]
    secrets = [new_secret() for _ in range(validators)] if entropy_span else []
    anchors = [HashChain(s, entropy_span).anchor for s in secrets]
    spec = GenesisSpec(
        network_id, timestamp_ms, [k.node_id for k in keys], params, anchors, entropy_span
    )
    return spec, keys, secrets


def write_lab(
    out: Path,
    spec: GenesisSpec,
    keys: list[Identity],
    overwrite: bool = True,
    secrets: list[bytes] | None = None,
) -> list[Path]:
    """genesis.json, validator-I.key and (with secrets) validator-I.entropy, all keys 0600.
    ``overwrite=False`` refuses to replace any existing file (real keys are never
    overwritten) and checks before writing anything."""
    key_paths = [out / f"validator-{i}.key" for i in range(len(keys))]
    secret_paths = [p.with_suffix(".entropy") for p in key_paths] if secrets else []
    written = [out / "genesis.json", *key_paths]
    if not overwrite:
        existing = [p for p in [*written, *secret_paths] if p.exists()]
        if existing:
            raise ConfigError(f"{existing[0]} exists: keys and genesis are never overwritten")
    out.mkdir(parents=True, exist_ok=True)
    for key, path in zip(keys, key_paths, strict=True):
        save_identity(key, path)
    for secret, path in zip(secrets or [], secret_paths, strict=True):
        save_secret(secret, path)
    (out / "genesis.json").write_text(json.dumps(spec.to_json(), indent=2) + "\n")
    return written
