"""`bench probes overhead --rates` tokens, the gso_max_segs read-back and the lost split."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from netdiag.bench import probes_rates as pr
from netdiag.errors import InputError


def test_tokens_map_to_iperf_arguments_and_path_settings() -> None:
    assert pr.parse("max") == pr.RateSpec("max", ())
    assert pr.parse("4G").iperf_args == ("-b", "4G")
    assert pr.parse("500M").iperf_args == ("-b", "500M")
    seg = pr.parse("seg:4:536")
    assert seg.iperf_args == ("-P", "4", "-M", "536") and seg.one_segment and seg.flows == 4
    assert pr.parse("seg:1").iperf_args == () and pr.parse("seg:1").one_segment
    small = pr.parse("small:4")
    assert small.iperf_args == ("-P", "4", "-N", "-l", "128") and not small.one_segment
    assert pr.parse("small:2:64").iperf_args == ("-P", "2", "-N", "-l", "64")
    assert [s.token for s in pr.parse_list("max, 4G,small:4")] == ["max", "4G", "small:4"]


@pytest.mark.parametrize("bad", ["fast", "seg:0", "seg:4:20", "small:0", "small:2:0", "4X", ""])
def test_bad_tokens_are_refused_with_a_hint(bad: str) -> None:
    with pytest.raises(InputError):
        pr.parse_list(bad)


def test_gso_segs_are_read_back_per_device_without_lo() -> None:
    out = json.dumps(
        [
            {"ifname": "lo", "gso_max_segs": 65535},
            {"ifname": "a-r", "gso_max_segs": 65535},
            {"ifname": "b-r", "gso_max_segs": 1},
            {"ifname": "x"},
        ]
    )
    assert pr.gso_segs_of(out) == {"a-r": 65535, "b-r": 1}
    assert pr.gso_segs_of("") == {}


def test_lost_events_split_by_cause_from_each_runs_last_cumulative_stats() -> None:
    run1 = [
        {"stats": {"lost_events": 0, "recursion_misses": 3}},
        {"stats": {"lost_events": 1, "recursion_misses": 5}},
    ]
    run2 = [{"events": 10}, {"stats": {"recursion_misses": 2}}]
    assert pr.lost_split([run1, run2, []]) == {"lost_map_full": 1, "lost_recursion_misses": 7}


def test_a_rate_row_has_ratio_cost_and_lost_figures() -> None:
    lines = [
        {"bpf_runs": 10, "events_per_s": 1000.0, "bpf_ns_per_event": 200.0, "bpf_cpu_pct": 0.02},
        {"bpf_runs": 0, "events_per_s": 0.0, "bpf_ns_per_event": None, "bpf_cpu_pct": 0.0},
        # events in the interval but none in its stats window: no cost figure, left out
        {"bpf_runs": 0, "events_per_s": 500.0, "bpf_ns_per_event": None, "bpf_cpu_pct": 0.0},
        {"bpf_runs": 30, "events_per_s": 3000.0, "bpf_ns_per_event": 100.0, "bpf_cpu_pct": 0.03},
        {"stats": {"lost_events": 0, "recursion_misses": 4}, "lost_events": 4},
    ]
    row = pr.figures(
        "small:4", "per-ack", 0.0, [10.0, 12.0], [9.0, 12.0], [SimpleNamespace(lines=lines)]
    )
    assert row["flows"] == 4 and row["one_segment_skbs"] is False
    assert row["events_per_s_mean"] == 2000.0 and row["bpf_cpu_pct_mean"] == 0.025
    assert row["ns_per_event_weighted"] == 125.0  # (10 x 200 + 30 x 100) / 40
    assert "ns_per_event_mean" not in row  # the per-line mean is gone: noise
    assert row["lost_events"] == 4 and row["lost_recursion_misses"] == 4
    assert row["pair_ratio_median"] == pytest.approx((0.9 + 1.0) / 2, abs=1e-4)


def test_ns_per_event_is_weighted_by_each_lines_runs() -> None:
    busy = {"bpf_runs": 900, "bpf_ns_per_event": 100.0}
    idle = {"bpf_runs": 100, "bpf_ns_per_event": 1000.0}
    assert pr.weighted_ns([busy, idle]) == 190.0  # the per-line mean would say 550
    assert pr.weighted_ns([{"bpf_runs": 0, "bpf_ns_per_event": None}]) is None
    assert pr.weighted_ns([busy, {"bpf_runs": 0, "bpf_ns_per_event": None}]) == 100.0


def test_tracer_cpu_is_the_mean_of_the_runs_that_measured_it() -> None:
    runs = [
        SimpleNamespace(lines=[], cpu_pct=0.5),
        SimpleNamespace(lines=[], cpu_pct=None),  # a run whose window was not marked
        SimpleNamespace(lines=[], cpu_pct=1.5),
    ]
    row = pr.figures("max", "per-ack", 0.0, [1.0] * 3, [1.0] * 3, runs, [0.5, 2.25, 1.0])
    assert row["tracer_cpu_pct"] == 1.0
    assert row["host_load_avg_1m_min"] == 0.5 and row["host_load_avg_1m_max"] == 2.25
    assert (
        pr.figures("max", "per-ack", 0.0, [1.0], [1.0], [SimpleNamespace(lines=[])])[
            "tracer_cpu_pct"
        ]
        is None
    )
