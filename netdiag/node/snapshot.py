"""State snapshots: deterministic chunks, a manifest anchored by a header's state root.

Format (version 1), all msgpack arrays:

- **chunk**: ``[version, first_bucket, last_bucket, [[key, balance, nonce], …]]`` — the
  accounts of buckets ``first..last`` (state.py: a key's first byte), in key order. Chunks cut
  the state at bucket boundaries, in bucket order, a new chunk once one reaches
  ``chunk_bytes``; so the same state and chunk size give the same bytes on every node. Chunk
  id = SHA-256(chunk bytes).
- **manifest**: ``[version, network_id, height, block_hash, state_root, bucket_roots[256],
  chunks[[id, first_bucket, last_bucket, size]…], chunk_root]`` with chunk_root = the Merkle
  root (model.merkle_root) over the encoded chunk entries. Manifest id = SHA-256(manifest).

Trust: a manifest is **anchored** when a verified header at its height has its hash and its
state root, and the 256 bucket roots hash up to that root (state.root_of_buckets). A chunk is
accepted when its bytes hash to the id the manifest lists at its index and the accounts it
carries rebuild exactly the manifest's bucket roots for its buckets — so a bad chunk is caught
on arrival, alone, and a forged manifest is refused before any chunk is fetched.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import msgspec

from netdiag.node.errors import ValidationError
from netdiag.node.model import Block, BlockHeader, merkle_root
from netdiag.node.state import (
    BUCKETS,
    Account,
    Ledger,
    StateCopy,
    bucket_of,
    bucket_root,
    leaf_hash,
    root_of_buckets,
)

FORMAT_VERSION = 1
_enc = msgspec.msgpack.Encoder()


class ChunkRef(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    id: bytes
    first_bucket: int
    last_bucket: int
    size: int


class Manifest(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    version: int
    network_id: str
    height: int
    block_hash: bytes
    state_root: bytes
    bucket_roots: list[bytes]
    chunks: list[ChunkRef]
    chunk_root: bytes

    def encode(self) -> bytes:
        return _enc.encode(self)

    def id(self) -> bytes:
        return hashlib.sha256(self.encode()).digest()


class Chunk(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    version: int
    first_bucket: int
    last_bucket: int
    accounts: list[tuple[bytes, int, int]]


class BadSnapshot(ValidationError):
    reason = "snapshot"


def chunk_root(refs: list[ChunkRef]) -> bytes:
    """Commits to every field of every chunk entry (id, buckets, size)."""
    return merkle_root([_enc.encode(r) for r in refs])


def decode_manifest(data: bytes) -> Manifest:
    try:
        return msgspec.msgpack.decode(data, type=Manifest)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise BadSnapshot(f"manifest does not decode: {e}") from e


def build(
    ledger: Ledger | StateCopy, block: Block, network_id: str, chunk_bytes: int
) -> tuple[Manifest, list[bytes]]:
    """The snapshot of ``ledger``, the state right after ``block``: manifest and chunks."""
    chunks: list[bytes] = []
    refs: list[ChunkRef] = []
    pending: list[tuple[bytes, int, int]] = []
    size = 0
    first = 0
    for b in range(BUCKETS):
        for key in sorted(ledger.bucket_leaves(b)):
            acct = ledger.accounts[key]
            pending.append((key, acct.balance, acct.nonce))
            size += 50  # about one encoded account: enough to cut chunks near chunk_bytes
        if size >= chunk_bytes or b == BUCKETS - 1:
            data = _enc.encode(Chunk(FORMAT_VERSION, first, b, pending))
            chunks.append(data)
            refs.append(ChunkRef(hashlib.sha256(data).digest(), first, b, len(data)))
            pending, size, first = [], 0, b + 1
    manifest = Manifest(
        FORMAT_VERSION,
        network_id,
        block.height,
        block.hash,
        block.header.state_root,
        list(ledger.bucket_roots()),
        refs,
        chunk_root(refs),
    )
    return manifest, chunks


def check_manifest(m: Manifest, header: BlockHeader, network_id: str) -> None:
    """Refuse a manifest not anchored in ``header`` (a header the caller verified)."""
    if m.version != FORMAT_VERSION:
        raise BadSnapshot(f"unknown snapshot format {m.version}")
    if m.network_id != network_id or m.height != header.height:
        raise BadSnapshot(f"manifest is for {m.network_id!r} at {m.height}")
    if m.block_hash != header.compute_hash() or m.state_root != header.state_root:
        raise BadSnapshot(
            f"manifest at {m.height} names block {m.block_hash[:6].hex()}… / state root "
            f"{m.state_root[:6].hex()}…, not the verified header's"
        )
    if len(m.bucket_roots) != BUCKETS or root_of_buckets(m.bucket_roots) != m.state_root:
        raise BadSnapshot(f"manifest at {m.height}: bucket roots do not hash to its state root")
    expect = 0
    for ref in m.chunks:
        if ref.first_bucket != expect or not ref.first_bucket <= ref.last_bucket < BUCKETS:
            raise BadSnapshot(f"manifest at {m.height}: chunks do not cover the buckets in order")
        expect = ref.last_bucket + 1
    if expect != BUCKETS:
        raise BadSnapshot(f"manifest at {m.height}: chunks stop at bucket {expect}")
    if chunk_root(m.chunks) != m.chunk_root:
        raise BadSnapshot(f"manifest at {m.height}: chunk root does not match its chunk list")


def check_chunk(m: Manifest, index: int, data: bytes) -> list[tuple[bytes, Account]]:
    """The accounts of chunk ``index`` of an anchored manifest, or BadSnapshot."""
    ref = m.chunks[index]
    if len(data) != ref.size or hashlib.sha256(data).digest() != ref.id:
        raise BadSnapshot(f"chunk {index} does not hash to its id {ref.id[:6].hex()}…")
    try:
        chunk = msgspec.msgpack.decode(data, type=Chunk)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise BadSnapshot(f"chunk {index} does not decode: {e}") from e
    if (chunk.version, chunk.first_bucket, chunk.last_bucket) != (
        FORMAT_VERSION,
        ref.first_bucket,
        ref.last_bucket,
    ):
        raise BadSnapshot(f"chunk {index} holds other buckets than the manifest lists")
    leaves: dict[int, dict[bytes, bytes]] = {
        b: {} for b in range(ref.first_bucket, ref.last_bucket + 1)
    }
    out: list[tuple[bytes, Account]] = []
    last = b""
    for key, balance, nonce in chunk.accounts:
        if len(key) != 32 or key <= last or bucket_of(key) not in leaves:
            raise BadSnapshot(f"chunk {index}: accounts out of order or outside its buckets")
        if not (0 <= balance < 2**63 and 0 <= nonce < 2**63):
            raise BadSnapshot(f"chunk {index}: account values out of range")
        last = key
        acct = Account(balance, nonce)
        leaves[bucket_of(key)][key] = leaf_hash(key, acct)
        out.append((key, acct))
    for b, bucket in leaves.items():
        if bucket_root(bucket) != m.bucket_roots[b]:
            raise BadSnapshot(f"chunk {index}: bucket {b} does not match the manifest's root")
    return out


# -- on disk: DATA_DIR/snapshots/manifest-<height>.bin, chunks/<id hex> (shared by manifests) --


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def snapshots_beside(store_path: Path) -> Path:
    """Where a node keeps snapshots: DATA_DIR/snapshots next to DATA_DIR/chain.sqlite."""
    return Path(store_path).parent / "snapshots"


class SnapshotStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.chunk_dir = root / "chunks"

    def _manifest_path(self, height: int) -> Path:
        return self.root / f"manifest-{height:012d}.bin"

    def chunk_path(self, chunk_id: bytes) -> Path:
        return self.chunk_dir / chunk_id.hex()

    def save(self, manifest: Manifest, chunks: list[bytes]) -> None:
        """Chunks first, manifest last: a manifest on disk always has all its chunks."""
        self.chunk_dir.mkdir(parents=True, exist_ok=True)
        for ref, data in zip(manifest.chunks, chunks, strict=True):
            self.put_chunk(ref.id, data)
        self.save_manifest(manifest)

    def save_manifest(self, manifest: Manifest) -> None:
        """Only once every chunk it lists is on disk."""
        self.root.mkdir(parents=True, exist_ok=True)
        _write(self._manifest_path(manifest.height), manifest.encode())

    def put_chunk(self, chunk_id: bytes, data: bytes) -> None:
        self.chunk_dir.mkdir(parents=True, exist_ok=True)
        path = self.chunk_path(chunk_id)
        if not path.exists():
            _write(path, data)

    def has_chunk(self, chunk_id: bytes) -> bool:
        return self.chunk_path(chunk_id).exists()

    def chunk(self, chunk_id: bytes) -> bytes | None:
        try:
            return self.chunk_path(chunk_id).read_bytes()
        except OSError:
            return None

    def heights(self) -> list[int]:
        if not self.root.exists():
            return []
        out = []
        for p in self.root.glob("manifest-*.bin"):
            try:
                out.append(int(p.stem.split("-", 1)[1]))
            except ValueError:
                continue
        return sorted(out)

    def manifest(self, height: int) -> Manifest | None:
        try:
            return decode_manifest(self._manifest_path(height).read_bytes())
        except (OSError, BadSnapshot):
            return None

    def manifests(self) -> Iterator[Manifest]:
        for h in self.heights():
            m = self.manifest(h)
            if m is not None:
                yield m

    def prune(self, keep: int) -> list[int]:
        """Keep the newest ``keep`` manifests; drop older ones and every chunk no kept manifest
        lists. Returns the heights dropped."""
        heights = self.heights()
        dropped = heights[: max(0, len(heights) - keep)]
        for h in dropped:
            self._manifest_path(h).unlink(missing_ok=True)
        live = {ref.id.hex() for m in self.manifests() for ref in m.chunks}
        if self.chunk_dir.exists():
            for p in self.chunk_dir.iterdir():
                if p.name not in live and not p.name.endswith(".tmp"):
                    p.unlink(missing_ok=True)
        return dropped

    def load(self, m: Manifest) -> Ledger:
        """The ledger a stored snapshot holds, every chunk checked against ``m`` (anchored by
        the caller)."""
        accounts: list[tuple[bytes, Account]] = []
        for i, ref in enumerate(m.chunks):
            data = self.chunk(ref.id)
            if data is None:
                raise BadSnapshot(f"chunk {i} ({ref.id[:6].hex()}…) is missing")
            accounts.extend(check_chunk(m, i, data))
        return Ledger(accounts)
