"""Snapshots: deterministic bytes across nodes, every flipped byte caught, anchoring, retention,
and the offline `netdiag node snapshot` commands."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from netdiag.node.chain import Chain
from netdiag.node.crypto import Identity, lab_identity
from netdiag.node.errors import ValidationError
from netdiag.node.genesis import GenesisSpec, write_lab
from netdiag.node.model import make_block, make_tx
from netdiag.node.snapshot import (
    BadSnapshot,
    SnapshotStore,
    build,
    check_chunk,
    check_manifest,
    decode_manifest,
)
from netdiag.node.snapshot_policy import SnapshotPolicy
from netdiag.node.state import Account, Ledger
from netdiag.node.store import Store
from tests.cli import run_main
from tests.unit.node import chainkit, corekit
from tests.unit.node.chainkit import T0, Clock, commit
from tests.unit.node.corekit import World

RICH = lab_identity("snap-test", 100)


def payees(n: int) -> list[bytes]:
    return [lab_identity("snap-payee", i).node_id for i in range(n)]


def funded_chain(db: Path) -> tuple[GenesisSpec, list[Identity], Chain, Clock]:
    """A fresh chain (3 validators, epochs of 4) whose genesis funds RICH."""
    spec, keys = chainkit.lab(allocations=[(RICH.node_id, 10**9)])
    clock = Clock()
    return spec, keys, Chain(Store(db), spec, clock_ms=clock), clock


def test_every_node_writes_the_same_snapshot_bytes(tmp_path: Path) -> None:
    """Three validators produce (gossip path), a late observer catches up by parallel sync
    (segment path): the snapshots they take at the same heights are byte-identical."""
    spec, keys = corekit.lab(allocations=[(RICH.node_id, 10**12)])
    world = World(tmp_path, spec)
    cfg = {"snapshot_interval": 5, "snapshot_keep": 50, "snapshot_chunk_bytes": 1024}
    cores = [world.node(f"v{i}", key=k, **cfg) for i, k in enumerate(keys)]
    world.connect(cores[0], cores[1])
    world.connect(cores[1], cores[2])
    world.connect(cores[2], cores[0])
    to = payees(300)
    for i, dest in enumerate(to):
        verdict, _ = cores[i % 3].ingest.submit_local_tx(
            make_tx(RICH, i, b"", world.clock.wall_ms(), dest, 1000 + i)
        )
        assert verdict == "accept"
        if i % 50 == 49:
            world.run(1.0)
    world.run(30.0)
    late = world.node("late", **cfg)
    world.connect(late, cores[0])
    world.connect(late, cores[1])
    world.run(10.0)
    heights = [set(c.snapshots.store.heights()) for c in [*cores, late]]
    common = set.intersection(*heights)
    assert len(common) >= 4, heights
    ref = SnapshotStore(tmp_path / "v0" / "snapshots")
    for h in common:
        m = ref.manifest(h)
        assert m is not None and len(m.chunks) > 1  # 1 KiB chunks: the state spans several
        for name in ("v1", "v2", "late"):
            other = SnapshotStore(tmp_path / name / "snapshots")
            assert other.manifest(h) == m
            for r in m.chunks:
                assert other.chunk(r.id) == ref.chunk(r.id)
    top = ref.manifest(max(common))
    assert top is not None
    ledger = ref.load(top)
    assert ledger.get(to[-1]) == Account(1000 + len(to) - 1, 0)


def small_snapshot(tmp: Path) -> tuple[Chain, object, list[bytes]]:
    spec, keys, chain, clock = funded_chain(tmp / "chain.sqlite")
    commit(chain, keys, clock, [make_tx(RICH, i, b"", T0, d, 5) for i, d in enumerate(payees(40))])
    manifest, chunks = build(chain.ledger, chain.tip, spec.network_id, 1024)
    return chain, manifest, chunks


def test_a_flipped_byte_anywhere_in_a_chunk_or_the_manifest_is_caught(tmp_path: Path) -> None:
    chain, manifest, chunks = small_snapshot(tmp_path)
    hdr = chain.tip.header
    m = decode_manifest(manifest.encode())  # type: ignore[attr-defined]
    check_manifest(m, hdr, "nd-test")
    assert len(chunks) > 1
    for i, data in enumerate(chunks):
        check_chunk(m, i, data)
        for pos in range(len(data)):
            for mask in (0x01,):
                bad = bytearray(data)
                bad[pos] ^= mask
                with pytest.raises(BadSnapshot):
                    check_chunk(m, i, bytes(bad))
    raw = m.encode()
    for pos in range(len(raw)):
        bad = bytearray(raw)
        bad[pos] ^= 0x01
        with pytest.raises(BadSnapshot):
            check_manifest(decode_manifest(bytes(bad)), hdr, "nd-test")


def test_a_manifest_not_anchored_in_the_verified_header_is_refused(tmp_path: Path) -> None:
    chain, manifest, _ = small_snapshot(tmp_path)
    hdr = chain.tip.header
    # a self-consistent snapshot of another state (a forger's balances) for the same block
    forged_state = Ledger([(RICH.node_id, Account(10**15, 0))])
    forged, _ = build(forged_state, chain.tip, "nd-test", 1024)
    with pytest.raises(BadSnapshot, match="bucket roots"):
        check_manifest(forged, hdr, "nd-test")
    # ... with the header's state root written in: the bucket roots do not hash to it
    also = msgspec.structs.replace(forged, state_root=hdr.state_root)
    with pytest.raises(BadSnapshot, match="bucket roots"):
        check_manifest(also, hdr, "nd-test")
    # ... or a forged header carrying the forged root: its signature does not verify
    fake_hdr = msgspec.structs.replace(hdr, state_root=forged_state.root())
    from netdiag.node.validation import check_header

    fake = make_block(lab_identity("nobody", 0), "nd-test", 1, hdr.prev_hash, 1, [])
    with pytest.raises(ValidationError):
        check_header(fake_hdr, fake_hdr.compute_hash(), fake.signature)
    # the real manifest, for another height or network, is refused too
    other = msgspec.structs.replace(hdr, height=hdr.height + 1)
    with pytest.raises(BadSnapshot):
        check_manifest(manifest, other, "nd-test")  # type: ignore[arg-type]
    with pytest.raises(BadSnapshot):
        check_manifest(manifest, hdr, "elsewhere")  # type: ignore[arg-type]


def test_retention_keeps_the_newest_and_prunes_their_chunks(tmp_path: Path) -> None:
    _, keys, chain, clock = funded_chain(tmp_path / "chain.sqlite")
    policy = SnapshotPolicy(chain, chain_log(), interval=2, keep=2, chunk_bytes=1024)
    for n, d in enumerate(payees(10)):
        commit(chain, keys, clock, [make_tx(RICH, n, b"", T0, d, 1)])
    assert policy.store.heights() == [8, 10]
    live = {r.id.hex() for m in policy.store.manifests() for r in m.chunks}
    assert {p.name for p in policy.store.chunk_dir.iterdir()} == live
    assert [m.height for m in policy.served()] == [10, 8]


def test_a_snapshot_is_built_off_the_loop_from_the_state_at_its_block(tmp_path: Path) -> None:
    """Built on a worker thread (LoopScheduler.off_loop): while a build is held up, the loop
    still commits blocks (on_block does not wait for it), and the snapshot is exactly the
    state right after its block (byte-identical to a build from that state), not the later
    state the ledger moved on to meanwhile."""
    import asyncio

    from netdiag.node.runtime import LoopScheduler
    from netdiag.node.snapshot import build

    _, keys, chain, clock = funded_chain(tmp_path / "chain.sqlite")

    async def run() -> tuple[int, bytes, bytes, list[int]]:
        policy = SnapshotPolicy(chain, chain_log(), 4, 2, 1024, LoopScheduler().off_loop)
        expected, at = b"", 0
        with policy._lock:  # the build thread waits here; the loop must not
            for n, d in enumerate(payees(6)):
                commit(chain, keys, clock, [make_tx(RICH, n, b"", T0, d, 7)])
                if chain.height % 4 == 0 and not expected:
                    at = chain.height
                    m, _ = build(chain.ledger, chain.tip, chain.genesis.network_id, 1024)
                    expected = m.encode()
            held = policy.store.heights()
        while policy.created < 1 or policy._building:
            await asyncio.sleep(0.01)
        got = policy.store.manifest(at)
        assert got is not None and chain.height > at
        return at, expected, got.encode(), held

    at, expected, got, held = asyncio.run(run())
    assert held == [], "no snapshot was written while its build was held"
    assert at and got == expected


def chain_log():  # type: ignore[no-untyped-def]
    import io

    from netdiag.node.logs import NodeLog

    return NodeLog("snap-test", io.StringIO(), "info")


def test_snapshot_cli_create_list_verify_and_a_damaged_chunk(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def run(args: list[str]) -> tuple[int, str]:
        return run_main(capsys, "node", "snapshot", *args)

    data = tmp_path / "d"
    spec, keys, chain, clock = funded_chain(data / "chain.sqlite")
    write_lab(tmp_path, spec, keys)
    for n, d in enumerate(payees(30)):
        commit(chain, keys, clock, [make_tx(RICH, n, b"", T0, d, 2)])
    chain.store.close()
    g = str(tmp_path / "genesis.json")
    res = run(
        [
            "create",
            "--data-dir",
            str(data),
            "--genesis",
            g,
            "--height",
            "20",
            "--chunk-bytes",
            "1024",
            "--json",
        ],
    )
    assert res[0] == 0, res[1]
    row = json.loads(res[1])
    assert row["height"] == 20 and row["accounts"] == 21 and row["chunks"] >= 1
    res = run(["list", "--data-dir", str(data), "--json"])
    assert [r["height"] for r in json.loads(res[1])] == [20]
    res = run(["verify", "--data-dir", str(data), "--genesis", g])
    assert res[0] == 0, res[1]
    chunk = next((data / "snapshots" / "chunks").iterdir())
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 1
    chunk.write_bytes(bytes(raw))
    res = run(["verify", "--data-dir", str(data), "--genesis", g])
    assert res[0] == 5 and "snapshot at 20 is bad" in res[1]
    res = run(
        ["create", "--data-dir", str(data), "--genesis", g, "--height", "99"],
    )
    assert res[0] == 2 and "above the stored tip 30" in res[1]
    missing = str(tmp_path / "nosuch")
    res = run(["list", "--data-dir", missing])
    assert res[0] == 2 and res[1].count("\n") == 1 and "does not exist" in res[1]
