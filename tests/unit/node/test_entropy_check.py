"""EntropyCheck decisions with scripted peers: supermajority, mismatch and its resync (our
entropy wrong vs our chain diverged), split, silence, stray answers, deferred answers."""

from __future__ import annotations

import random
from typing import Any

from netdiag.node.entropy_check import EntropyCheck, EntropyParams
from netdiag.node.messages import Blocks, EntropyRequest, EntropyResponse, GetBlocks
from netdiag.node.model import Block, BlockHeader

OURS = b"\x01" * 32
THEIRS = b"\x02" * 32


class Peer:
    is_open = True

    def __init__(self, name: str) -> None:
        self.peer_id = name.encode()
        self.sent: list[Any] = []

    def send(self, msg: Any) -> None:
        self.sent.append(msg)


class Host:
    def __init__(self, peers: list[Peer]) -> None:
        self.peers = peers
        self.entropy: dict[int, bytes] = {10: OURS}
        self.stored: dict[int, bytes] = {10: THEIRS}
        self.events: list[tuple[str, str, dict[str, object]]] = []
        self.forks: list[Peer] = []
        self.recomputed: list[int] = []

    def entropy_peers(self) -> list[Any]:
        return list(self.peers)

    def local_entropy(self, seed_height: int) -> bytes | None:
        return self.entropy.get(seed_height)

    def recompute_entropy(self, seed_height: int) -> bytes | None:
        self.recomputed.append(seed_height)
        self.entropy[seed_height] = self.stored[seed_height]
        return self.entropy[seed_height]

    def stored_hash(self, seed_height: int) -> bytes | None:
        return self.stored.get(seed_height)

    def authentic(self, block: Block) -> bool:
        return True

    def resolve_fork_with(self, conn: Any) -> None:
        self.forks.append(conn)

    def entropy_event(self, event: str, msg: str, level: str, **fields: object) -> None:
        self.events.append((event, msg, fields))


def setup(n: int) -> tuple[EntropyCheck, Host, list[Peer], list[float]]:
    peers = [Peer(f"p{i}") for i in range(n)]
    host = Host(peers)
    now = [0.0]
    check = EntropyCheck(host, lambda: now[0], EntropyParams(sample=8), random.Random(1))  # type: ignore[arg-type]
    return check, host, peers, now


def reply(check: EntropyCheck, p: Peer, entropy: bytes) -> bool:
    req = next(m for m in p.sent if isinstance(m, EntropyRequest))
    return check.on_response(p, EntropyResponse(req.req_id, req.seed_height, entropy))  # type: ignore[arg-type]


def seed_block(h: bytes) -> Block:
    hdr = BlockHeader(1, "n", 10, bytes(32), 0, bytes(32), bytes(32), 0)
    return Block(hdr, h, b"", [])


def test_two_thirds_agree_proceeds_and_tallies() -> None:
    check, _host, peers, _ = setup(3)
    check.on_boundary(10)
    assert all(p.sent == [EntropyRequest(p.sent[0].req_id, 10, OURS)] for p in peers)
    reply(check, peers[0], OURS)
    reply(check, peers[1], OURS)
    reply(check, peers[2], THEIRS)  # 3 of 4 votes for ours (ours included)
    assert check.round is None and check.may_produce
    assert check.outcomes["agree"] == 1 and check.votes["disagree"] == 1
    assert check.history[-1]["agree"] == 3 and check.history[-1]["disagree"] == 1


def test_mismatch_halts_then_resync_recomputes_and_recheck_recovers() -> None:
    check, host, peers, _now = setup(2)
    host.stored[10] = THEIRS  # our chain has the majority's block: our entropy was wrong
    check.on_boundary(10)
    for p in peers:
        reply(check, p, THEIRS)
    assert check.halted and check.outcomes["mismatch"] == 1
    gb = next(m for p in peers for m in p.sent if isinstance(m, GetBlocks))
    asked = next(p for p in peers if gb in p.sent)
    assert gb.start == 10 and gb.count == 1 and check.owns(gb.req_id)
    check.on_blocks(asked, Blocks(gb.req_id, [seed_block(THEIRS).encode()]))  # type: ignore[arg-type]
    assert host.recomputed == [10] and check.halted  # still halted until the re-check agrees
    check.tick()  # re-check at once
    for p in peers:
        p.sent = [m for m in p.sent if isinstance(m, EntropyRequest)][-1:]
        reply(check, p, THEIRS)
    assert not check.halted and check.history[-1]["attempt"] == 1
    assert "recovered" in host.events[-1][1]


def test_mismatch_with_a_diverged_chain_goes_to_fork_resolution() -> None:
    check, host, peers, _ = setup(2)
    host.stored[10] = OURS  # our stored block differs from the majority's
    check.on_boundary(10)
    for p in peers:
        reply(check, p, THEIRS)
    gb = next(m for p in peers for m in p.sent if isinstance(m, GetBlocks))
    asked = next(p for p in peers if gb in p.sent)
    check.on_blocks(asked, Blocks(gb.req_id, [seed_block(THEIRS).encode()]))  # type: ignore[arg-type]
    assert host.forks == [asked] and check.halted and not host.recomputed


def test_seed_block_not_matching_the_majority_is_not_trusted() -> None:
    check, host, peers, _now = setup(2)
    check.on_boundary(10)
    for p in peers:
        reply(check, p, THEIRS)
    gb = next(m for p in peers for m in p.sent if isinstance(m, GetBlocks))
    asked = next(p for p in peers if gb in p.sent)
    check.on_blocks(asked, Blocks(gb.req_id, [seed_block(b"\x09" * 32).encode()]))  # type: ignore[arg-type]
    assert not host.recomputed and not host.forks and check.halted
    assert check.recheck_at is not None and check.recheck_at[0] == 1.0


def test_split_halts_and_rechecks_after_backoff() -> None:
    check, _host, peers, now = setup(3)
    check.on_boundary(10)
    reply(check, peers[0], OURS)
    reply(check, peers[1], THEIRS)
    reply(check, peers[2], b"\x03" * 32)
    assert check.halted and check.outcomes["split"] == 1
    now[0] = 0.5
    check.tick()
    assert check.round is None  # back-off not over
    now[0] = 1.0
    check.tick()
    assert check.round is not None and check.round.attempt == 1


def test_silence_times_out_unverified_and_stray_answers_are_refused() -> None:
    check, _host, peers, now = setup(3)
    check.on_boundary(10)
    stranger = Peer("x")
    assert not check.on_response(stranger, EntropyResponse(1, 10, OURS))  # type: ignore[arg-type]
    now[0] = 0.31
    check.tick()
    assert check.outcomes["unverified"] == 1 and check.timeouts == 3 and check.may_produce
    assert not reply(check, peers[0], OURS)  # too late: the round is over


def test_answer_is_deferred_until_the_seed_block_is_committed() -> None:
    check, host, _peers, now = setup(1)
    asker = Peer("asker")
    check.answer(asker, EntropyRequest(7, 20, OURS))  # type: ignore[arg-type]
    assert asker.sent == []
    host.entropy[20] = OURS
    check.on_height()
    assert asker.sent == [EntropyResponse(7, 20, OURS)]
    check.answer(asker, EntropyRequest(8, 30, OURS))  # type: ignore[arg-type]
    now[0] = 0.5
    check.tick()
    assert asker.sent[-1] == EntropyResponse(8, 30, b"")  # abstains after the collection time
