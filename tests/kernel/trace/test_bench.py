"""CI short variants of `netdiag bench probes …`: they run end to end and keep their schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from netdiag.cli.main import main
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
                "--out",
                str(out),
                "--json",
            ]
        )
        == 0
    )
    doc = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == doc
    assert len(doc["throughput_off_bps"]) == len(doc["throughput_on_bps"]) == 1
    assert all(x > 0 for x in doc["throughput_off_bps"] + doc["throughput_on_bps"])
    assert doc["throughput_ratio_on_off"] > 0 and len(doc["pair_ratios"]) == 1
    assert doc["events_per_s_max"] > 0 and doc["ns_per_event_mean"] > 0
    assert doc["lost_events"] >= 0 and doc["startup_s_median"] > 0 and doc["peak_rss_mb_max"] > 10


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
    doc = json.loads(out.read_text())
    assert doc["min_rtt_us"]["truth"] == 10_000
    # the probe's min RTT is a real measurement of the configured delay
    # the kernel's raw minimum is within a few % of the configured delay; the smoothed
    # minimum of a short transfer sits above it (queueing), never below the physics
    rtt = doc["min_rtt_us"]
    assert abs(doc["min_rtt_error_pct"]["sock_diag"]) < 5
    assert 0.98 * rtt["truth"] <= rtt["tcp_peers"] <= 1.5 * rtt["truth"]
    assert abs(doc["bdp_error_pct"]) < 10
    assert doc["bdp_bytes"]["truth"] == 50_000 and doc["bdp_bytes"]["bdp"] > 0
    r = doc["retransmits"]
    assert r["tcp_peers_events"] <= r["nstat_TcpRetransSegs"]
    assert set(doc["cwnd"]) == {"tcp_peers", "sock_diag", "ss"}
