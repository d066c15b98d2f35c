"""Session.read over a probe whose rows live in a direct-mapped array plus an overflow hash
(tcp_peers' `slots` + `peers`): empty slots skipped, hash rows deleted once reported closed,
slot rows reported closed once and never deleted (the kernel reuses the slot)."""

from __future__ import annotations

from typing import Any

from netdiag.trace import engine, manifest
from netdiag.trace.decode import Decoder
from tests.unit.trace.test_decode import _peer_leaf


class FakeTable:
    def __init__(self, items: dict[Any, Any], deletable: bool = True) -> None:
        self.entries = items
        self.deletable = deletable
        self.deleted: list[Any] = []

    def items(self) -> list[tuple[Any, Any]]:
        return list(self.entries.items())

    def delete(self, key: Any) -> None:
        assert self.deletable, "array slots must not be deleted"
        self.deleted.append(key)
        del self.entries[key]

    def sum(self, index: int) -> int:
        return 0


class FakeLoaded:
    from_cache = True

    def __init__(self, tables: dict[str, FakeTable]) -> None:
        self.tables = tables

    def table(self, name: str) -> FakeTable:
        return self.tables[name]

    def prog_fds(self) -> dict[str, int]:
        return {}

    def attached(self) -> int:
        return 3

    def ksym(self, addr: int) -> str:
        return ""

    def close(self) -> None:
        pass


def _session(slots: FakeTable, peers: FakeTable) -> engine.Session:
    p = manifest.load("tcp_peers")
    assert p.output.slots_map == "slots"
    ticks = iter(range(1_000_000_000, 100_000_000_000, 1_000_000_000))
    s = engine.Session(p, clock=lambda: next(ticks))
    s.bpf = FakeLoaded({"slots": slots, "peers": peers, "stats": FakeTable({})})
    s.decoder = Decoder(p, {"state": {1: "ESTABLISHED", 7: "CLOSE"}})
    s._prev_t = 0
    return s


def test_rows_come_from_slots_and_overflow_and_empty_slots_are_skipped() -> None:
    slots = FakeTable({0: _peer_leaf(cookie=0), 1: _peer_leaf(cookie=1025)}, deletable=False)
    peers = FakeTable({7: _peer_leaf(cookie=7)})
    rows = _session(slots, peers).read().rows
    assert sorted(r["sock_cookie"] for r in rows) == [7, 1025]


def test_a_closed_slot_row_is_reported_once_and_its_reuse_is_reported() -> None:
    slots = FakeTable({1: _peer_leaf(cookie=1025, closed_ns=2_500_000_000, state=7)})
    slots.deletable = False
    peers = FakeTable({7: _peer_leaf(cookie=7, closed_ns=2_500_000_000, state=7)})
    s = _session(slots, peers)
    first = [r["sock_cookie"] for r in s.read().rows]
    second = [r["sock_cookie"] for r in s.read().rows]
    assert sorted(first) == [7, 1025]
    assert second == [], "closed rows: reported once (hash row deleted, slot row remembered)"
    assert peers.deleted and not peers.entries
    # the kernel gives the slot to a new socket: its row is new, reported while open
    slots.entries[1] = _peer_leaf(cookie=2049)
    assert [r["sock_cookie"] for r in s.read().rows] == [2049]
    # and if the new owner closes, it too is reported once
    slots.entries[1] = _peer_leaf(cookie=2049, closed_ns=9_000_000_000, state=7)
    assert [r["sock_cookie"] for r in s.read().rows] == [2049]
    assert [r["sock_cookie"] for r in s.read().rows] == []


def test_slot_reuse_waits_three_read_intervals_when_that_is_longer_than_the_default() -> None:
    from netdiag.kernel import bcc_loader
    from netdiag.trace.peers import SLOT_REUSE_NS, slot_defines

    assert slot_defines(1.0) == {} and slot_defines(20.0) == {}  # the program's 60 s holds
    assert slot_defines(30.0) == {"SLOT_REUSE_NS": 90_000_000_000}
    # the Python default names the program's own
    text = bcc_loader.bpf_source("tcp_peers").read_text()
    assert f"#define SLOT_REUSE_NS {SLOT_REUSE_NS}ULL" in text
