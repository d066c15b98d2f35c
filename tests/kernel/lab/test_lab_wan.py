"""The issue's bar: 50 ms / 100 Mbit/s / 1 % loss — RTT on target, BBR far above CUBIC."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from netdiag.lab import Lab, two_node
from netdiag.lab.fidelity import ping_rtt, rtt_target_s
from netdiag.lab.iperf import iperf3
from tests.kernel.lab.helpers import leftovers

pytestmark = pytest.mark.usefixtures("need_iperf3")


@pytest.mark.slow
def test_wan_rtt_and_bbr_beats_cubic(lab_name: str) -> None:
    with Lab.up(two_node(0.05, 100_000_000, 0.01, name=lab_name)) as lab:
        # median of 8 batch means (lost probes, ~2 % per round trip, simply do not count)
        rtt_us = ping_rtt(lab, "a", "b")["rtt_median_us"]
        assert abs(rtt_us - 50_000) <= rtt_target_s(0.05) * 1e6, rtt_us
        bbr = iperf3(lab, "a", "b", ["-C", "bbr"], 6, 5201)["end"]["sum_received"][
            "bits_per_second"
        ]
        cubic = iperf3(lab, "a", "b", ["-C", "cubic"], 6, 5202)["end"]["sum_received"][
            "bits_per_second"
        ]
        print(
            f"rtt {rtt_us / 1000:.3f} ms, bbr {bbr / 1e6:.1f} Mbit/s, "
            f"cubic {cubic / 1e6:.1f} Mbit/s"
        )
        assert lab.metadata()["engine"] == "userspace" or lab.metadata()["engine"] == "kernel"
        assert bbr > 5 * cubic, (bbr, cubic)
        assert bbr > 50e6
    assert leftovers(lab_name) == []


def test_bench_emulator_quick_schema(tmp_path: Path) -> None:
    out = tmp_path / "emu.json"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "netdiag.cli.main",
            "bench",
            "emulator",
            "--quick",
            "--seconds",
            "1",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=os.environ,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert res["benchmark"] == "emulator" and res["engine"] in ("userspace", "kernel")
    (p,) = res["points"]
    for key in (
        "rtt_avg_us",
        "rtt_median_us",
        "rate_ratio",
        "rtt_err_us",
        "rtt_ok",
        "goodput_ratio",
        "rate_ok",
        "loss_observed",
        "loss_ci95",
        "loss_ok",
        "emulator_cpu_pct",
        "engine",
    ):
        assert key in p, key
    assert p["rtt_median_us"] > 20_000 and 0.5 < p["rate_ratio"] < 1.2
    assert 0 < p["goodput_ratio"] < 1.2 and 0 < p["loss_observed"] < 0.05
