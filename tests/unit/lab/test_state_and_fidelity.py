from __future__ import annotations

import os
from pathlib import Path

import pytest

from netdiag.bench import emulator_fidelity as fidelity
from netdiag.lab import calibrate, ping, state


def test_state_roundtrip(tmp_path: Path) -> None:
    state.update("x", tmp_path, engine="userspace", add_namespaces=["nd-x-a"])
    state.update("x", tmp_path, add_namespaces=["nd-x-b"])
    rec = state.read("x", tmp_path)
    assert rec is not None and rec["namespaces"] == ["nd-x-a", "nd-x-b"]
    assert state.names(tmp_path) == ["x"]
    state.remove("x", tmp_path)
    assert state.read("x", tmp_path) is None and state.names(tmp_path) == []


def test_alive_checks_start_time() -> None:
    me = state.proc_record(os.getpid(), "test")
    assert state.alive(me)
    # same pid, other start time: a reused pid must not be treated as ours
    assert not state.alive({**me, "start": me["start"] + 1})
    assert not state.alive({"pid": 2**22 + 1, "start": 1})


def test_wilson_contains_truth() -> None:
    lo, hi = fidelity.wilson(100, 10_000)
    assert lo < 0.01 < hi and hi - lo < 0.005
    assert fidelity.wilson(0, 0) == (0.0, 1.0)
    lo, hi = fidelity.wilson(0, 1000)
    assert lo == 0.0 and 0 < hi < 0.01


def test_parse_ping() -> None:
    out = "--- x ping statistics ---\nrtt min/avg/max/mdev = 50.1/50.2/50.9/0.1 ms\n"
    assert ping.parse_ping(out)["rtt_avg_us"] == pytest.approx(50200)


def test_rtt_goal() -> None:
    # issue 17's goal: 0.1 ms + 0.5 % of the delay
    assert calibrate.goal_us(50_000) == pytest.approx(350)
