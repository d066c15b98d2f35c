"""Onboarding from a snapshot, whole nodes on a manual clock: headers, manifest, chunks from
several peers, blocks after, synchronized, backfill; a bad source, resume, fallback."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from netdiag.node.chain import Chain
from netdiag.node.core import NodeCore
from netdiag.node.crypto import lab_identity
from netdiag.node.model import make_tx
from netdiag.node.store import Store
from tests.unit.node import corekit
from tests.unit.node.corekit import World

RICH = lab_identity("onboard-test", 100)
SERVE = {"snapshot_interval": 10, "snapshot_keep": 3, "snapshot_chunk_bytes": 1024}
# every holder a source (the joiner waits for all three: on instant links the first holder's
# announcement alone would otherwise carry the whole join before the others connect)
JOIN = {"snapshot_sync": True, "snapshot_wait_s": 3.0, "snapshot_min_sources": 3, **SERVE}


def network(tmp: Path, **serve: Any) -> tuple[World, list[NodeCore]]:
    """Three validators that grew a chain of ~45 blocks and funded 200 accounts."""
    spec, keys = corekit.lab(allocations=[(RICH.node_id, 10**12)])
    world = World(tmp, spec)
    cores = [world.node(f"v{i}", key=k, **{**SERVE, **serve}) for i, k in enumerate(keys)]
    world.connect(cores[0], cores[1])
    world.connect(cores[1], cores[2])
    world.connect(cores[2], cores[0])
    for i in range(200):
        dest = lab_identity("onboard-payee", i).node_id
        tx = make_tx(RICH, i, b"", world.clock.wall_ms(), dest, 10 + i)
        assert cores[i % 3].ingest.submit_local_tx(tx)[0] == "accept"
        if i % 40 == 39:
            world.run(1.0)
    world.run(18.0)
    assert cores[0].height >= 30
    return world, cores


def join(world: World, cores: list[NodeCore], name: str = "joiner") -> NodeCore:
    j = world.node(name, **JOIN)
    for c in cores:
        world.connect(j, c)
    return j


def caught_up(j: NodeCore, cores: list[NodeCore]) -> bool:
    return j.height >= cores[0].height - 1 and j.synchronized()


def run_until(world: World, cond: Any, budget_s: float) -> None:
    t = 0.0
    while not cond() and t < budget_s:
        world.run(0.5)
        t += 0.5
    assert cond(), f"not reached within {budget_s} s of simulated time"


def test_a_joiner_restores_a_snapshot_then_syncs_and_backfills(tmp_path: Path) -> None:
    world, cores = network(tmp_path)
    j = join(world, cores)
    for _ in range(3000):  # fine steps: stop right at "done", before backfill begins
        if j.onboarding.phase == "done":
            break
        world.run(0.01)
    assert j.onboarding.phase == "done"
    ob = j.onboarding.view()
    h = ob["snapshot_height"]
    assert isinstance(h, int) and h % 10 == 0 and h >= 20
    assert ob["headers_verified"] == h
    assert ob["chunks_verified"] == ob["chunks_total"] and ob["chunks_total"] > 1
    served = ob["sources"]
    assert isinstance(served, dict) and sum(1 for s in served.values() if s["chunks"]) >= 2
    # a restart now (history below the base still missing) rebuilds the state from the kept
    # snapshot plus the blocks above it, checked against the tip's state root
    again = Chain(Store(tmp_path / "joiner" / "chain.sqlite"), j.chain.genesis)
    assert again.store.base_height() == h and again.ledger.root() == j.chain.ledger.root()
    again.store.close()
    run_until(world, lambda: caught_up(j, cores), 30)
    run_until(world, lambda: j.chain.store.base_height() == 0, 60)
    assert j.chain.store.block_at(1) == cores[0].chain.store.block_at(1)
    names = [e["event"] for e in world.events("joiner", "snapshot_restored")]
    assert names and not world.events("joiner", "snapshot_fallback")


def test_a_source_serving_bad_chunks_is_banned_and_the_join_completes(tmp_path: Path) -> None:
    world, cores = network(tmp_path)
    cores[2].snapshot_service.corrupt_chunks = True
    j = join(world, cores)
    run_until(world, lambda: j.onboarding.phase == "done", 30)
    ob = j.onboarding.view()
    assert ob["chunks_bad"] >= 1
    assert j.book.peer_banned(cores[2].node_id)
    run_until(world, lambda: caught_up(j, cores), 30)


def test_a_restart_mid_restore_refetches_no_verified_chunk(tmp_path: Path) -> None:
    """What kill -9 leaves mid-restore — verified chunks on disk, no manifest, no base — is
    resumed: those chunks are checked, not fetched again; a damaged one is refetched."""
    world, cores = network(tmp_path)
    first = join(world, cores, "first")
    run_until(world, lambda: first.onboarding.phase == "done", 30)
    total = first.onboarding.view()["chunks_total"]
    assert isinstance(total, int) and total >= 3
    src = tmp_path / "first" / "snapshots" / "chunks"
    dst = tmp_path / "second" / "snapshots" / "chunks"
    dst.mkdir(parents=True)
    files = sorted(src.iterdir())[: total // 2 + 1]
    for f in files:
        shutil.copy(f, dst / f.name)
    damaged = dst / files[0].name
    damaged.write_bytes(damaged.read_bytes()[:-1])
    second = join(world, cores, "second")
    run_until(world, lambda: second.onboarding.phase == "done", 30)
    ob = second.onboarding.view()
    assert ob["chunks_resumed"] == len(files) - 1
    fetched = ob["chunks_verified"] - ob["chunks_resumed"]  # type: ignore[operator]
    assert fetched == total - (len(files) - 1)


def test_no_snapshot_anywhere_falls_back_to_replay(tmp_path: Path) -> None:
    world, cores = network(tmp_path, snapshot_interval=0)
    j = join(world, cores)
    run_until(world, lambda: caught_up(j, cores), 40)
    assert j.onboarding.phase == "replay"
    falls = world.events("joiner", "snapshot_fallback")
    assert falls and "no peer announced a snapshot" in falls[0]["msg"]
    assert j.chain.store.base_height() == 0


def test_announcements_are_signed_rate_limited_and_fresh() -> None:
    from netdiag.node.snapshot_gossip import Availability, make_announce

    now = [100.0]
    g = b"\x01" * 32
    avail = Availability(g, 2.0, lambda: now[0])
    who = lab_identity("announcer", 0)
    ann = make_announce(who, g, 500, b"\x02" * 32, b"\x03" * 32, 1_000_000)
    assert avail.on_announce(ann, 1_000_000) == ("accept", "")
    again = make_announce(who, g, 600, b"\x02" * 32, b"\x03" * 32, 1_000_100)
    assert avail.on_announce(again, 1_000_100)[0] == "ignore"  # within half an interval
    now[0] += 1.0
    assert avail.on_announce(again, 1_000_100)[0] == "accept"
    stale = make_announce(who, g, 700, b"\x02" * 32, b"\x03" * 32, 1_000_000)
    now[0] += 1.0
    assert avail.on_announce(stale, 1_000_000 + 7_000)[0] == "ignore"  # older than 3 intervals
    other_net = make_announce(who, b"\x09" * 32, 800, b"\x02" * 32, b"\x03" * 32, 1_000_000)
    assert avail.on_announce(other_net, 1_000_000)[0] == "reject"
    assert avail.on_announce(b"junk", 1_000_000)[0] == "reject"
    assert {k[0] for k in avail.holders} == {500, 600}


def test_a_holder_tells_a_new_peer_its_snapshot_at_once(tmp_path: Path) -> None:
    """A node that keeps snapshots sends its last announcement to a peer as it connects (the
    same signed bytes: deduplicated by everyone who saw them), so a joiner picks its snapshot
    without waiting for the next announcement round (snapshot_announce_s, 2 s here)."""
    world, cores = network(tmp_path)
    j = join(world, cores)
    world.run(0.5)
    assert j.onboarding.phase != "waiting" and j.onboarding.target is not None


def test_backfill_keeps_a_window_of_requests_over_several_peers(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """History below the base is asked in a window of requests spread over the peers (not
    one round trip per batch), written strictly downwards, and ends identical to the
    servers' history."""
    import netdiag.node.onboard_backfill as backfill

    monkeypatch.setattr(backfill, "BACKFILL_BATCH", 4)  # many batches from a short chain
    seen: list[tuple[int, bytes | None]] = []  # (requests in flight, server) at each answer
    answer = backfill.Backfill.on_blocks

    def on_blocks(self: Any, conn: Any, msg: Any) -> None:
        seen.append((len(self.span), conn.peer_id))
        answer(self, conn, msg)

    monkeypatch.setattr(backfill.Backfill, "on_blocks", on_blocks)
    world, cores = network(tmp_path)
    j = join(world, cores)
    run_until(world, lambda: j.onboarding.phase == "done", 30)
    run_until(world, lambda: j.chain.store.base_height() == 0, 60)
    most = max(n for n, _ in seen)
    asked = {p for _, p in seen}
    assert most >= 2 and len(asked) >= 2
    top = j.onboarding.view()["snapshot_height"]
    assert isinstance(top, int)
    for h in range(1, top + 1):
        assert j.chain.store.hash_at(h) == cores[0].chain.store.hash_at(h)


def test_an_announcement_picks_the_snapshot_without_waiting_for_a_tick(tmp_path: Path) -> None:
    """While waiting, an accepted announcement chooses the snapshot at once (the sync tick
    comes every 0.25 s: the joiner is asking for headers before its first one)."""
    world, cores = network(tmp_path)
    j = join(world, cores)  # connecting delivers the holders' announcements; no time passes
    assert j.onboarding.phase != "waiting" and j.onboarding.target is not None
    assert len(j.onboarding.sources) == 3
