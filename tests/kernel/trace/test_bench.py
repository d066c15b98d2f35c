"""CI short variants of `netdiag bench probes …`: they run end to end and keep their schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from netdiag.cli.main import main
from netdiag.report import results
from tests.conftest import missing_tool


@pytest.mark.slow
def test_bench_probes_overhead_short(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if reason := missing_tool("iperf3"):
        pytest.skip(reason)
    out = tmp_path / "o.json"
    assert (
        main(
            [
                "bench",
                "probes",
                "overhead",
                "--runs",
                "1",
                "--seconds",
                "1",
                "--interval",
                "0.5",
                "--rates",
                "max,1G",
                "--sample-ms",
                "0,1",
                "--out",
                str(out),
                "--json",
            ]
        )
        == 0
    )
    saved = results.load(out)  # the one result format, schema-checked
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == saved
    # every rate with every probe variant (per ACK, and sampled in the kernel), side by side
    assert [(r["rate"], r["variant"]) for r in saved["summary"]["by_rate"]] == [
        ("max", "per-ack"),
        ("max", "sample-1ms"),
        ("1G", "per-ack"),
        ("1G", "sample-1ms"),
    ]
    assert all(r["throughput_ratio_on_off"] > 0 for r in saved["summary"]["by_rate"])
    [pair] = saved["raw"]["pairs"]
    [doc] = saved["summary"]["overhead"]
    assert pair["throughput_off_bps"] > 0 and pair["throughput_on_bps"] > 0
    # the ratio is what the bench reports (its size is a figure, not a test threshold)
    assert doc["throughput_ratio_on_off"] == pytest.approx(pair["ratio_on_off"], rel=0.01)
    # the probes saw the iperf3 traffic and their cost was measured
    assert doc["events_per_s_max"] > 0 and doc["ns_per_event_weighted"] > 0
    # the summary row is the first rate's first variant's by_rate row, weighted figure included
    first = saved["summary"]["by_rate"][0]
    same = ("ns_per_event_weighted", "pair_ratio_median", "lost_events")
    same += ("host_load_avg_1m_min", "host_load_avg_1m_max")  # the first rate's rounds only
    for k in same:
        assert doc[k] == first[k], k
    assert isinstance(doc["lost_events"], int) and doc["startup_s_median"] > 0
    assert doc["first_row_s_median"] >= doc["startup_s_median"]
    assert doc["peak_rss_mb_max"] > 0


@pytest.mark.slow
def test_bench_probes_accuracy_short(tmp_path: Path) -> None:
    out = tmp_path / "a.json"
    assert (
        main(
            [
                "bench",
                "probes",
                "accuracy",
                "--mbytes",
                "1",
                "--delay-ms",
                "10",
                "--rate-mbit",
                "40",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    saved = results.load(out)  # the one result format: one summary table per quantity
    doc = {name: rows[0] for name, rows in saved["summary"].items()}
    assert doc["min_rtt_us"]["truth"] == 10_000
    # never below the physics (the configured delay); how close each source gets is the
    # bench's reported error, not a threshold here. The smoothed minimum of a short transfer
    # sits at or above the kernel's raw minimum (a 2 % allowance for clock rounding).
    rtt = doc["min_rtt_us"]
    assert rtt["sock_diag"] >= 0.98 * rtt["truth"] and rtt["tcp_peers"] >= 0.98 * rtt["truth"]
    assert doc["min_rtt_error_pct"]["sock_diag"] == pytest.approx(
        100 * (rtt["sock_diag"] - rtt["truth"]) / rtt["truth"], abs=0.5
    )
    # bdp = bottleneck rate x min RTT, and no rate beats the 40 Mbit/s link (a short rate
    # sample may overshoot a little)
    bdp = doc["bdp_bytes"]
    assert bdp["truth"] == 50_000 and 0 < bdp["bw_bps"] <= 1.2 * 40e6, bdp
    # (bdp takes the smallest RTT its samples saw; sock_diag's is the connection's end value)
    assert bdp["bdp"] == pytest.approx(bdp["bw_bps"] / 8 * rtt["sock_diag"] / 1e6, rel=0.25)
    r = doc["retransmits"]
    assert r["tcp_peers_events"] <= r["nstat_TcpRetransSegs"]
    assert set(doc["cwnd"]) == {"tcp_peers", "sock_diag", "ss"}


@pytest.mark.slow
def test_bench_probes_launch_short(tmp_path: Path) -> None:
    out = tmp_path / "l.json"
    argv = ["bench", "probes", "launch", "--runs", "2", "--interval", "0.3", "--steady-rows", "1"]
    assert main([*argv, "--out", str(out)]) == 0
    saved = results.load(out)  # the one result format, schema-checked
    by = {r["loader"]: r for r in saved["summary"]["launch"]}
    assert set(by) == {"bcc", "light"}
    # the point of the light loader: no LLVM/libbcc in the resident tracer (sizes are figures)
    assert by["bcc"]["llvm_mapped"] is True and by["light"]["llvm_mapped"] is False
    assert all(r["steady_rss_mb"] > 0 for r in saved["raw"]["launches"])
    assert [r["cache"] for r in saved["raw"]["launches"]] == ["cold", "cold", "warm", "warm"]
