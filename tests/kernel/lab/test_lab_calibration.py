"""Calibrated links and veth links on the real kernel.

The residual a lab reports must agree with a ping measured through the link afterwards —
a ratio with a wide margin (this host may be loaded), never an absolute figure: how close the
lab gets is what `netdiag bench emulator` reports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from netdiag.bench import testbed
from netdiag.kernel import netns
from netdiag.lab import Lab, calibrate, state, two_node
from netdiag.lab.engines.kernel import netem_available
from netdiag.lab.ping import ping_rtt
from netdiag.lab.teardown import down_all
from tests.cli import run_netdiag
from tests.kernel.lab.helpers import leftovers

pytestmark = pytest.mark.usefixtures("need_iperf3")


def test_reported_residual_agrees_with_a_ping_through_the_link(lab_name: str) -> None:
    delay_us = 20_000.0
    with Lab.up(two_node(delay_us / 1e6, 100_000_000, name=lab_name)) as lab:
        cal = lab.metadata()["links"][0]["calibration"]
        assert set(cal) >= {"overhead_us", "correction_us", "residual_us", "goal_us", "ok"}
        # what was subtracted is the link's own latency: never negative, never the whole delay
        assert 0 <= cal["correction_us"] < delay_us
        rec = state.read(lab_name)
        assert rec is not None and rec["links"][0]["correction_us"] == cal["correction_us"]
        assert rec["links"][0]["shape"]["delay_us"] == delay_us  # the record keeps the config
        expected = calibrate.expected_rtt_us(lab.shapes[0])
        seen = ping_rtt(lab, "a", "b")["rtt_median_us"]
        # the same RTT within 5 % either way (1 ms at 20 ms: room for a loaded host)
        assert 0.95 <= seen / (expected + cal["residual_us"]) <= 1.05, (seen, cal)
        # `lab status --json` shows the same record per link
        r = run_netdiag("lab", "status", lab_name, "--json")
        assert r.returncode == 0, r.stderr
        (st,) = json.loads(r.stdout)
        assert st["links"][0]["calibration"]["residual_us"] == cal["residual_us"]
        # a new delay is measured again; its residual agrees with ping the same way
        lab.set_link("a", "b", delay_s=0.05)
        again = lab.metadata()["links"][0]["calibration"]
        assert again["time"] > cal["time"] and again["goal_us"] > cal["goal_us"]
        seen = ping_rtt(lab, "a", "b", batches=5, count=5)["rtt_median_us"]
        expected = calibrate.expected_rtt_us(lab.shapes[0])
        assert 0.95 <= seen / (expected + again["residual_us"]) <= 1.05, (seen, again)
    assert leftovers(lab_name) == []


def test_veth_links_carry_the_testbed_and_down_all_recovers_after_kill_9(
    lab_state: Path,
) -> None:
    code = (
        "import sys, time\n"
        "from netdiag.bench import testbed\n"
        "with testbed.path3(rate_mbit=50) as p:\n"
        "    print(p.client, p.router, p.server, flush=True)\n"
        "    time.sleep(300)\n"
    )
    env = {**os.environ, "NETDIAG_STATE": str(lab_state)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None
        spaces = proc.stdout.readline().split()
        assert len(spaces) == 3, spaces
        (name,) = state.names(lab_state)
        rec = state.read(name, lab_state)
        assert rec is not None
        assert [ln["kind"] for ln in rec["links"]] == ["veth", "veth"]
        assert not any("pid" in ln for ln in rec["links"])  # no forwarder: kernel veth pairs
        # the path carries traffic client -> router -> server, shaped by the router's TBF
        ping = subprocess.run(
            ["ip", "netns", "exec", spaces[0], "ping", "-c", "2", "-i", "0.2", testbed.SERVER_IP],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert ping.returncode == 0, ping.stdout + ping.stderr
        tc = subprocess.run(
            ["tc", "-n", spaces[1], "qdisc", "show", "dev", rec["links"][1]["dev_a"]],
            capture_output=True,
            text=True,
        )
        assert "tbf" in tc.stdout, tc.stdout
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert all(netns.exists(ns) for ns in spaces)  # left behind by kill -9
    done = down_all(lab_state, stale_only=True)
    assert [d["lab"] for d in done] == [name]
    assert not any(netns.exists(ns) for ns in spaces)
    assert state.names(lab_state) == []


def test_veth_link_with_delay_without_netem_is_refused_before_anything(
    tmp_path: Path, lab_name: str, lab_state: Path
) -> None:
    if netem_available():
        pytest.skip("this kernel has sch_netem: a veth link with delay is allowed here")
    topo = tmp_path / "v.toml"
    topo.write_text(
        f'name = "{lab_name}"\n[[nodes]]\nname = "a"\n[[nodes]]\nname = "b"\n'
        '[[links]]\na = "a"\nb = "b"\nkind = "veth"\ndelay = "10ms"\nrate = "10mbit"\n'
    )
    r = run_netdiag("lab", "up", str(topo))
    assert r.returncode == 4, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "kind veth" in lines[0] and "delay" in lines[0], r.stderr
    assert "sch_netem" in lines[0]
    assert leftovers(lab_name) == [] and state.names() == []
