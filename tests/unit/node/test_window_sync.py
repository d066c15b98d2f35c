"""ParallelSync decisions against a real Chain and SQLite store, with scripted peers: range
discovery by agreement, the window spread over peers with a per-peer cap, liars (height,
order, forged segments), stalls with doubling timeouts, phases, nothing invalid stored."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from netdiag.node.chain import Chain
from netdiag.node.crypto import Identity
from netdiag.node.genesis import ChainParams, lab_genesis
from netdiag.node.messages import Blocks, GetBlocks, Status
from netdiag.node.model import Block
from netdiag.node.sigpool import SigPool
from netdiag.node.store import Store
from netdiag.node.window_sync import ParallelSync, WindowParams
from tests.unit.node.synckit import SLOT_MS, build_chain, forge

N = 600


class Peer:
    is_open = True

    def __init__(self, name: str) -> None:
        self.peer_id = name.encode().ljust(32, b"\0")
        self.sent: list[Any] = []

    def send(self, msg: Any) -> None:
        self.sent.append(msg)

    def close(self, reason: str) -> None:
        self.is_open = False


class Host:
    def __init__(self, chain: Chain) -> None:
        self.chain: Chain | None = chain
        self.penalties: list[tuple[bytes, str]] = []
        self.bans: list[tuple[bytes, str]] = []
        self.notes: list[tuple[str, str]] = []
        self.queue: list[Callable[[], None]] = []
        self.committed = 0
        self.offloaded = 0
        self.sigs = SigPool(0)  # inline: these tests judge decisions, not cores

    @property
    def height(self) -> int:
        assert self.chain is not None
        return self.chain.height

    def apply_block(self, conn: Any, raw: bytes, source: str, next_raw: Any = None) -> str:
        return "ignored"

    def apply_branch(self, conn: Any, raws: list[bytes]) -> str:
        return "ignored"

    def fork_point(self, headers: Any) -> int | None:
        return None

    def penalize(self, conn: Any, amount: float, reason: str) -> None:
        self.penalties.append((conn.peer_id, reason))

    def ban(self, conn: Any, reason: str) -> None:
        self.bans.append((conn.peer_id, reason))
        conn.close(reason)

    def note(self, event: str, msg: str, **fields: object) -> None:
        self.notes.append((event, msg))

    def info(self, event: str, msg: str, **fields: object) -> None:
        self.notes.append((event, msg))

    def committed_segment(self, blocks: list[Block], source: str) -> None:
        self.committed += len(blocks)

    def schedule(self, fn: Callable[[], None]) -> None:
        self.queue.append(fn)

    def off_loop(self, fn: Callable[[], Any], done: Callable[[Any], None]) -> None:
        self.offloaded += 1
        out = fn()
        self.queue.append(lambda: done(out))

    def stored_hash(self, height: int) -> bytes | None:
        assert self.chain is not None
        return self.chain.store.hash_at(height)

    def now_ms(self) -> int:
        return int(time.time() * 1000)


@pytest.fixture(scope="module")
def built() -> tuple[Any, list[Identity], list[Block]]:
    ts = int(time.time() * 1000) - (N + 1000) * SLOT_MS
    spec, keys = lab_genesis(3, "w", "nd-test", ts, ChainParams(epoch_length=50, slot_ms=SLOT_MS))
    return spec, keys, build_chain(spec, keys, N)


def setup(tmp: Path, built: Any, **kw: Any) -> tuple[ParallelSync, Host, list[float], list[Block]]:
    spec, _, blocks = built
    chain = Chain(Store(tmp / "chain.sqlite"), spec)
    host = Host(chain)
    now = [0.0]
    params = WindowParams(window=128, chunk=16, per_peer=2, min_distance=8, **kw)
    return ParallelSync(host, lambda: now[0], params), host, now, blocks  # type: ignore[arg-type]


Behaviour = Callable[[GetBlocks], list[bytes] | None]  # None = stay silent


def honest(blocks: list[Block]) -> Behaviour:
    def serve(req: GetBlocks) -> list[bytes]:
        return [b.encode() for b in blocks[req.start - 1 : req.start - 1 + req.count]]

    return serve


def pump(sync: ParallelSync, host: Host, peers: dict[Peer, Behaviour], rounds: int = 400) -> None:
    """Deliver every request to its scripted peer and run scheduled verification steps."""
    for _ in range(rounds):
        moved = False
        for peer, behave in peers.items():
            reqs, peer.sent = [m for m in peer.sent if isinstance(m, GetBlocks)], []
            for req in reqs:
                if not peer.is_open:
                    continue
                out = behave(req)
                if out is not None:
                    sync.on_blocks(peer, Blocks(req.req_id, out))  # type: ignore[arg-type]
                    moved = True
        while host.queue:
            host.queue.pop(0)()
            moved = True
        if not moved:
            return


def answer_tip(sync: ParallelSync, p: Peer, blocks: list[Block]) -> None:
    req = next(m for m in p.sent if isinstance(m, GetBlocks) and m.count == 1)
    p.sent.remove(req)
    sync.on_blocks(p, Blocks(req.req_id, [blocks[req.start - 1].encode()]))  # type: ignore[arg-type]


def status(sync: ParallelSync, peer: Peer, blocks: list[Block], height: int) -> None:
    tip = blocks[height - 1].hash if height <= len(blocks) else b"\x01" * 32
    sync.on_status(peer, Status(height, tip, b"g"))  # type: ignore[arg-type]


def test_three_honest_peers_window_spread_and_cap(tmp_path: Path, built: Any) -> None:
    sync, host, _, blocks = setup(tmp_path, built)
    peers = [Peer(n) for n in "abc"]
    for p in peers:
        status(sync, p, blocks, N)
    assert sync.phase == "discovering" and sync.target == 0
    # Tip claims answered: window requests go out, at most 2 per peer, spread over all three.
    for p in peers:
        answer_tip(sync, p, blocks)
    assert sync.target == N and sync.phase == "downloading"
    in_flight = [sum(isinstance(m, GetBlocks) for m in p.sent) for p in peers]
    assert in_flight == [2, 2, 2]
    assert host.chain is not None and host.chain.height == 0  # nothing stored before verified
    pump(sync, host, {p: honest(blocks) for p in peers})
    assert host.chain.height == N and host.chain.tip_hash == blocks[-1].hash
    assert sync.synchronized() and sync.phase == "following"
    served = [ps.blocks_served for ps in sync.peers.values()]
    assert all(s > N // 6 for s in served), served
    assert not host.bans and not host.penalties


def test_one_unverified_claim_is_never_a_target(tmp_path: Path, built: Any) -> None:
    sync, _host, _, blocks = setup(tmp_path, built)
    a, b = Peer("a"), Peer("b")
    status(sync, a, blocks, N)
    status(sync, b, blocks, N)
    answer_tip(sync, a, blocks)
    # a is verified but b (also claiming) is not yet: no single peer decides the target.
    assert sync.target == 0 and not any(isinstance(m, GetBlocks) and m.count > 1 for m in a.sent)
    answer_tip(sync, b, blocks)
    assert sync.target == N


def test_liar_about_height_is_ignored_and_penalized(tmp_path: Path, built: Any) -> None:
    sync, host, _, blocks = setup(tmp_path, built)
    honest_peers = [Peer("a"), Peer("b")]
    liar = Peer("liar")
    status(sync, liar, blocks, 1_000_000)
    for p in honest_peers:
        status(sync, p, blocks, N)
    (lreq,) = liar.sent
    liar.sent = []
    sync.on_blocks(liar, Blocks(lreq.req_id, []))  # type: ignore[arg-type]  # cannot serve it
    assert (liar.peer_id, "claimed a tip it could not serve") in host.penalties
    behaviours: dict[Peer, Behaviour] = {p: honest(blocks) for p in honest_peers}
    behaviours[liar] = lambda req: []
    pump(sync, host, behaviours)
    assert host.chain is not None and host.chain.height == N
    assert sync.peers[liar].blocks_served == 0  # type: ignore[index]


def test_forged_segment_is_discarded_refetched_and_server_banned(
    tmp_path: Path, built: Any
) -> None:
    sync, host, _, blocks = setup(tmp_path, built)
    a, b, f = Peer("a"), Peer("b"), Peer("forger")

    def forging(req: GetBlocks) -> list[bytes]:
        return [
            (forge(x) if x.height >= 100 else x).encode()
            for x in blocks[req.start - 1 : req.start - 1 + req.count]
        ]

    peers: dict[Peer, Behaviour] = {a: honest(blocks), b: honest(blocks), f: forging}
    for p in peers:
        status(sync, p, blocks, N)
    for p in peers:  # tip claims are genuine
        answer_tip(sync, p, blocks)
    pump(sync, host, peers)
    assert host.chain is not None and host.chain.height == N
    assert [pid for pid, _ in host.bans] == [f.peer_id]
    _event, msg = next(n for n in host.notes if n[0] == "sync_chain_break")
    h = int(msg.split()[3].rstrip(":"))
    assert h >= 100
    assert msg.startswith(
        f"chain break at {h}: expected prev_hash 0x{blocks[h - 2].hash[:6].hex()}…, got 0x"
    )
    assert f"from peer {f.peer_id[:6].hex()}…" in msg
    for x in range(1, N + 1):  # nothing forged was stored
        assert host.chain.store.hash_at(x) == blocks[x - 1].hash


def test_out_of_order_range_bans_and_sync_completes(tmp_path: Path, built: Any) -> None:
    sync, host, _, blocks = setup(tmp_path, built)
    a, b, s = Peer("a"), Peer("b"), Peer("shuffler")

    def shuffled(req: GetBlocks) -> list[bytes]:
        return list(reversed(honest(blocks)(req)))

    peers: dict[Peer, Behaviour] = {a: honest(blocks), b: honest(blocks), s: shuffled}
    for p in peers:
        status(sync, p, blocks, N)
    for p in peers:
        answer_tip(sync, p, blocks)
    pump(sync, host, peers)
    assert host.chain is not None and host.chain.height == N
    assert [pid for pid, _ in host.bans] == [s.peer_id]
    assert "out of order" in host.bans[0][1]


def test_stalling_peer_times_out_doubling_and_is_replaced(tmp_path: Path, built: Any) -> None:
    sync, host, now, blocks = setup(tmp_path, built)
    a, b, slow = Peer("a"), Peer("b"), Peer("slow")
    peers: dict[Peer, Behaviour] = {a: honest(blocks), b: honest(blocks), slow: lambda r: None}
    for p in peers:
        status(sync, p, blocks, N)
    for p in peers:
        answer_tip(sync, p, blocks)
    pump(sync, host, peers)
    assert host.chain is not None and host.chain.height < N  # the slow peer holds ranges
    assert sync.peers[slow].timeout_s == 2.0  # type: ignore[index]
    now[0] = 2.5
    sync.tick()
    assert sync.peers[slow].timeout_s == 4.0 and sync.stats.stalls >= 1  # type: ignore[index]
    pump(sync, host, peers)
    for t in (10.0, 20.0, 40.0, 80.0):  # until the window no longer waits on it
        now[0] = t
        sync.tick()
        pump(sync, host, peers)
    assert host.chain.height == N
    p = sync.peers[slow]  # type: ignore[index]
    assert p.stalls >= 2 and p.benched_until > 0 and p.timeout_s <= 64.0
    assert any(e == "sync_stall" and "stalled past 2 s" in m for e, m in host.notes)


def test_single_peer_that_stalled_once_is_still_used(tmp_path: Path, built: Any) -> None:
    sync, host, now, blocks = setup(tmp_path, built)
    only = Peer("only")
    dropped: list[int] = []

    def flaky(req: GetBlocks) -> list[bytes] | None:
        if not dropped:
            dropped.append(req.start)  # loses its first range request
            return None
        return honest(blocks)(req)

    status(sync, only, blocks, N)
    answer_tip(sync, only, blocks)
    assert sync.target == N  # one peer claims it: one verified claim is enough
    pump(sync, host, {only: flaky})
    assert host.chain is not None and host.chain.height < dropped[0]
    for t in (2.5, 5.0, 7.5, 10.0):
        now[0] = t
        sync.tick()
        pump(sync, host, {only: flaky})
    assert host.chain.height == N and sync.stats.stalls >= 1


def test_authentic_fork_at_the_anchor_goes_to_the_follower_without_a_ban(
    tmp_path: Path, built: Any
) -> None:
    from netdiag.node.window_sync import REQ_ID_BASE
    from tests.unit.node.chainkit import branch

    sync, host, now, blocks = setup(tmp_path, built)
    _, keys, _ = built
    assert host.chain is not None
    host.chain.append_verified(blocks[:10])
    other = branch(host.chain, keys, 9, 60)  # a longer valid branch forking below our tip
    theirs = blocks[:9] + other

    a, b = Peer("a"), Peer("b")
    peers: dict[Peer, Behaviour] = {a: honest(theirs), b: honest(theirs)}
    for p in peers:
        status(sync, p, theirs, len(theirs))
    for p in peers:
        answer_tip(sync, p, theirs)
    assert sync.target == len(theirs)
    pump(sync, host, peers)
    assert any(e == "sync_fork" for e, _ in host.notes) and not host.bans
    assert sync.target == 0 and host.chain.height == 10  # nothing adopted by parallel sync
    for p in peers:
        p.sent = []
    now[0] = 1.0
    sync.tick()  # within the hold: no new target; the follower asks for the range instead
    assert sync.target == 0
    sent = [m for p in peers for m in p.sent if isinstance(m, GetBlocks)]
    assert sent and all(m.req_id < REQ_ID_BASE for m in sent) and sent[0].start == 11


class ProvingPool:
    """A pool with workers as sync sees it: batches of at least ``min_batch`` are proven
    (here in process, by the node's own verify), the rest left to the step."""

    parallel = True
    min_batch = 8

    def __init__(self) -> None:
        self.proven = 0

    def prove(self, items: list[Any]) -> list[Any]:
        from netdiag.node import crypto

        ok = [it for it in items if crypto.verify(*it)]
        self.proven += len(items)
        return ok


def test_a_verify_step_yields_after_its_time_budget(tmp_path: Path, built: Any) -> None:
    """Budget 0: every loop turn verifies and commits exactly one block, and the sync still
    ends at the tip (the turn is bounded, the work is not lost)."""
    sync, host, _, blocks = setup(tmp_path, built, verify_budget_s=0.0)
    steps: list[int] = []
    inner = sync.verify_step

    def counted() -> None:
        before = host.committed
        inner()
        steps.append(host.committed - before)

    sync.verify_step = counted  # type: ignore[method-assign]
    a = Peer("a")
    status(sync, a, blocks, N)
    answer_tip(sync, a, blocks)
    pump(sync, host, {a: honest(blocks)}, rounds=5000)
    assert host.chain is not None and host.chain.height == N
    assert steps and set(steps) <= {0, 1}
    assert sum(steps) == N


def test_signatures_are_proven_off_the_loop_and_a_bad_one_still_bans(
    tmp_path: Path, built: Any
) -> None:
    """With pool workers the segment's signatures go to the pool through ``host.off_loop``
    before the step runs; a block whose signature the pool rejected is verified inline, fails,
    and bans its server, as without a pool."""
    import msgspec

    sync, host, _, blocks = setup(tmp_path, built)
    pool = ProvingPool()
    host.sigs = pool  # type: ignore[assignment]
    a, f = Peer("a"), Peer("forger")
    bad = msgspec.structs.replace(blocks[99], signature=bytes(64))  # height 100, same hash

    def forging(req: GetBlocks) -> list[bytes]:
        served = blocks[req.start - 1 : req.start - 1 + req.count]
        return [(bad if x.height == 100 else x).encode() for x in served]

    peers: dict[Peer, Behaviour] = {a: honest(blocks), f: forging}
    for p in peers:
        status(sync, p, blocks, N)
    for p in peers:
        answer_tip(sync, p, blocks)
    pump(sync, host, peers)
    assert host.chain is not None and host.chain.height == N
    assert host.offloaded > 0 and pool.proven > 0
    assert host.chain.store.hash_at(100) == blocks[99].hash
    if host.bans:  # the forger served height 100 (the window decides who serves what)
        assert [pid for pid, _ in host.bans] == [f.peer_id]


def test_steps_verify_proven_blocks_while_the_pool_proves_the_next(
    tmp_path: Path, built: Any
) -> None:
    """Pipelined: once a step's signatures are proven it runs while the rest of the run is at
    the pool (one batch in flight), no signature goes to the pool twice, and the sync ends at
    the tip with every block committed."""
    from netdiag.node.sigpool import sig_checks

    sync, host, _, blocks = setup(tmp_path, built, verify_step=4)
    pool = ProvingPool()
    host.sigs = pool  # type: ignore[assignment]
    during: list[bool] = []
    inner = sync.verify_step

    def watched() -> None:
        during.append(sync._proving)
        inner()

    sync.verify_step = watched  # type: ignore[method-assign]
    a = Peer("a")
    status(sync, a, blocks, N)
    answer_tip(sync, a, blocks)
    pump(sync, host, {a: honest(blocks)}, rounds=5000)
    assert host.chain is not None and host.chain.height == N
    assert any(during), "no step ran while a batch was at the pool"
    assert 0 < pool.proven <= len(sig_checks(blocks))
