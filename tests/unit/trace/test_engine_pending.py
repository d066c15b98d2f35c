"""Session.read over a sampled tcp_peers build (-DSAMPLE_NS): ACKs waiting per CPU in `pend`
for their socket's next sample on that CPU are added to the row at each read, so a row's
events and min/max srtt are complete whichever CPU the last ACKs fell on."""

from __future__ import annotations

from dataclasses import dataclass

from tests.unit.trace.test_decode import _peer_leaf
from tests.unit.trace.test_engine_slots import FakeTable, _session

NONE = 0xFFFFFFFF  # the kernel's "no srtt sample" for a minimum


@dataclass
class Pend:  # struct pend of bpf/tcp_peers.bpf.c
    cookie: int
    events: int
    srtt_min_us: int = NONE
    srtt_max_us: int = 0
    sample_ns: int = 0


def _row(pend: dict[int, list[Pend]] | None, cookie: int = 1025) -> dict[str, object]:
    s = _session(FakeTable({1: _peer_leaf(cookie=cookie)}, deletable=False), FakeTable({}))
    if pend is not None:
        s.bpf.tables["pend"] = FakeTable(pend)  # type: ignore[union-attr]
    return next(r for r in s.read().rows if r["sock_cookie"] == cookie)


def test_a_per_ack_build_has_no_pending_map_and_rows_are_as_read() -> None:
    plain = _row(None)
    assert plain["events"] == _peer_leaf(cookie=1025).events


def test_events_waiting_on_every_cpu_are_added_and_min_max_widened() -> None:
    base = _row(None)
    got = _row(
        {
            7: [Pend(1025, 5, 900, 5000), Pend(1025, 3, NONE, 0)],  # CPU 1: no srtt sample
            9: [Pend(2049, 40, 1, 99999), Pend(0, 0)],  # another socket's: not this row
        }
    )
    assert got["events"] == base["events"] + 8
    assert got["srtt_min_us"] == min(base["srtt_min_us"], 900)  # type: ignore[type-var]
    assert got["srtt_max_us"] == max(base["srtt_max_us"], 5000)  # type: ignore[type-var]


def test_a_read_adds_without_writing_back() -> None:
    s = _session(FakeTable({1: _peer_leaf(cookie=1025)}, deletable=False), FakeTable({}))
    s.bpf.tables["pend"] = FakeTable({3: [Pend(1025, 4)]})  # type: ignore[union-attr]
    first = next(r for r in s.read().rows if r["sock_cookie"] == 1025)["events"]
    again = next(r for r in s.read().rows if r["sock_cookie"] == 1025)["events"]
    assert first == again, "the same pending events must not be added twice"
