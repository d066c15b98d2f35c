"""Run-time stats only in a window before each read: on at open_window(), off at sample()."""

from __future__ import annotations

from netdiag.trace.bpfstats import ProgStats
from netdiag.trace.overhead import Overhead, text


class FakeStats:
    def __init__(self) -> None:
        self.on: list[int] = []
        self.calls: list[str] = []

    def enable(self) -> int | None:
        self.calls.append("enable")
        self.on.append(7)
        return 7

    def disable(self, fd: int | None) -> None:
        if fd is not None:
            self.calls.append("disable")
            self.on.remove(fd)


def test_stats_are_on_only_between_open_window_and_sample() -> None:
    st, t = FakeStats(), [10.0]
    o = Overhead([], clock=lambda: t[0], enable=st.enable, disable=st.disable)
    assert st.on == [] and o.sample() is None  # no window opened: no figures, nothing on
    o.open_window()
    assert st.on == [7]
    t[0] = 10.1
    got = o.sample()
    assert st.on == [] and st.calls == ["enable", "disable"]
    assert got is not None and got["bpf_stats_window_s"] == 0.1 and got["bpf_runs"] == 0
    assert got["bpf_ns_per_event"] is None  # no run in the window: no cost per run, not 0
    assert text(got) == "probe cost: no run in the stats window"
    assert o.sample() is None  # the next read without a window: none
    o.open_window()
    o.close()
    assert st.on == []


def test_without_bpf_enable_stats_there_are_no_figures_and_no_retry() -> None:
    tries: list[int] = []

    def refuse() -> int | None:
        tries.append(1)
        return None

    o = Overhead([], enable=refuse, disable=lambda _fd: None)
    for _ in range(3):
        o.open_window()
        assert o.sample() is None
    assert tries == [1]  # refused once: the failure is kept, not retried every interval


def test_a_window_with_runs_has_their_mean_cost() -> None:
    st, t = FakeStats(), [0.0]
    totals = iter([ProgStats(1_000, 10), ProgStats(31_000, 110)])

    class Counted(Overhead):
        def _total(self) -> ProgStats:
            return next(totals)

    o = Counted([], clock=lambda: t[0], enable=st.enable, disable=st.disable)
    o.open_window()
    t[0] = 0.1
    got = o.sample()
    assert got is not None and got["bpf_runs"] == 100 and got["bpf_ns_per_event"] == 300.0
    assert got["bpf_runs_per_s"] == 1000.0
    assert text(got) == "probe cost 1,000 runs/s × 300 ns = 0.030% of one CPU"
