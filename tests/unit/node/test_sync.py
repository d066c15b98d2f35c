"""SequentialSync decisions with a scripted host: ranges, forks, stalls, bad responses."""

from __future__ import annotations

from typing import Any

from netdiag.node.messages import Blocks, GetBlocks, GetHeaders, Headers, Status
from netdiag.node.model import BlockHeader
from netdiag.node.sync import SequentialSync


class Conn:
    is_open = True

    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send(self, msg: Any) -> None:
        self.sent.append(msg)


class Host:
    def __init__(self) -> None:
        self.height = 10
        self.penalties: list[str] = []
        self.outcomes: list[str] = []
        self.branches: list[list[bytes]] = []
        self.fork: int | None = 7
        self.notes: list[str] = []

    def apply_block(self, conn: Any, raw: bytes, source: str, next_raw: Any = None) -> str:
        out = self.outcomes.pop(0)
        if out == "accepted":
            self.height += 1
        return out

    def apply_branch(self, conn: Any, raws: list[bytes]) -> str:
        self.branches.append(raws)
        return "accepted"

    def fork_point(self, headers: list[BlockHeader]) -> int | None:
        return self.fork

    def penalize(self, conn: Any, amount: float, reason: str) -> None:
        self.penalties.append(reason)

    def note(self, event: str, msg: str, **fields: object) -> None:
        self.notes.append(event)

    def stored_hash(self, height: int) -> bytes | None:
        return b"ours" if height <= self.height else None


def verified_claim(sync: SequentialSync, conn: Conn, height: int) -> None:
    """A peer's tip at ``height`` that window_sync has verified (unverified claims are not
    followed: see test_unverified_claims_are_not_followed)."""
    sync.saw_height(conn, height)  # type: ignore[arg-type]
    sync.tick()


def hdr(h: int) -> bytes:
    return BlockHeader(1, "n", h, bytes(32), 0, bytes(32), bytes(32), 0).encode()


def setup() -> tuple[SequentialSync, Host, Conn, list[float]]:
    now = [0.0]
    host = Host()
    sync = SequentialSync(host, lambda: now[0], 4, 5, 5)  # type: ignore[arg-type]
    return sync, host, Conn(), now


def test_requests_ranges_until_caught_up() -> None:
    sync, host, conn, _ = setup()
    verified_claim(sync, conn, 15)
    req = conn.sent[-1]
    assert req == GetBlocks(req.req_id, 11, 4) and not sync.synchronized()
    host.outcomes = ["accepted"] * 4
    sync.on_blocks(conn, Blocks(req.req_id, [b"x"] * 4))  # type: ignore[arg-type]
    assert conn.sent[-1] == GetBlocks(conn.sent[-1].req_id, 15, 1)
    host.outcomes = ["accepted"]
    sync.on_blocks(conn, Blocks(conn.sent[-1].req_id, [b"x"]))  # type: ignore[arg-type]
    assert sync.synchronized() and sync.inflight is None and not host.penalties


def test_fork_goes_headers_then_branch() -> None:
    sync, host, conn, _ = setup()
    verified_claim(sync, conn, 14)
    host.outcomes = ["orphan"]
    sync.on_blocks(conn, Blocks(conn.sent[-1].req_id, [b"x"]))  # type: ignore[arg-type]
    gh = conn.sent[-1]
    assert gh == GetHeaders(gh.req_id, 5, 6)  # the reorg window: height - depth .. height
    sync.on_headers(conn, Headers(gh.req_id, [hdr(h) for h in range(5, 11)]))  # type: ignore[arg-type]
    gb = conn.sent[-1]
    assert gb == GetBlocks(gb.req_id, 8, 7)  # fork at 7; their tip 14
    sync.on_blocks(conn, Blocks(gb.req_id, [b"y"] * 7))  # type: ignore[arg-type]
    assert host.branches == [[b"y"] * 7] and not host.penalties


def test_bad_headers_unsolicited_and_stalls_are_penalized() -> None:
    sync, host, conn, now = setup()
    sync.on_blocks(conn, Blocks(99, [b"x"]))  # type: ignore[arg-type]
    assert host.penalties == ["unsolicited Blocks response"]
    verified_claim(sync, conn, 14)
    host.outcomes = ["orphan"]
    sync.on_blocks(conn, Blocks(conn.sent[-1].req_id, [b"x"]))  # type: ignore[arg-type]
    gh = conn.sent[-1]
    sync.on_headers(conn, Headers(gh.req_id, [hdr(h) for h in (5, 7, 8)]))  # type: ignore[arg-type]
    assert host.penalties[-1] == "headers not the range requested"
    sync.tick()  # retries the range
    now[0] = 100.0
    sync.tick()  # which stalled
    assert any("stalled" in p for p in host.penalties)


def test_fork_deeper_than_limit_is_not_followed() -> None:
    sync, host, conn, _ = setup()
    host.fork = None
    verified_claim(sync, conn, 14)
    host.outcomes = ["orphan"]
    sync.on_blocks(conn, Blocks(conn.sent[-1].req_id, [b"x"]))  # type: ignore[arg-type]
    gh = conn.sent[-1]
    sync.on_headers(conn, Headers(gh.req_id, [hdr(h) for h in range(5, 11)]))  # type: ignore[arg-type]
    assert host.notes == ["fork_too_deep"] and sync.synchronized()


def test_unverified_claims_are_not_followed() -> None:
    sync, _, conn, _ = setup()
    sync.on_status(conn, Status(10**9, b"t", b"g"))  # type: ignore[arg-type]
    assert not conn.sent and sync.synchronized(), "a claim alone moves nothing"
    sync.on_status(conn, Status(10, b"ours", b"g"))  # type: ignore[arg-type]
    assert sync.synchronized()
    sync.on_status(conn, Status(9, b"other", b"g"))  # type: ignore[arg-type]
    assert sync.synchronized() and not conn.sent
