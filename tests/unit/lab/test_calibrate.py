"""Calibration logic: what is subtracted, what is reported, when it measures again — with the
pings faked by a link model whose own latency is known."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from netdiag.lab import calibrate, live, state
from netdiag.lab.calibrate import Measurement
from netdiag.lab.topology import LinkShape


def test_expected_rtt_adds_the_probes_serialization() -> None:
    assert calibrate.expected_rtt_us(LinkShape(0.02)) == pytest.approx(20_000)
    # 84-byte probe, both ways, at 10 Mbit/s: 2 x 67.2 us
    assert calibrate.expected_rtt_us(LinkShape(0.02, rate_bps=10_000_000)) == pytest.approx(
        20_134.4
    )


def test_goal() -> None:
    assert calibrate.goal_us(0) == pytest.approx(100)
    assert calibrate.goal_us(20_000) == pytest.approx(200)


def test_measurement_from_ping_summaries() -> None:
    batches = [
        {"rtt_avg_us": 20_150.0, "rtt_min_us": 20_060.0},
        {"rtt_avg_us": 20_130.0, "rtt_min_us": 20_040.0},
        {"rtt_avg_us": 21_900.0, "rtt_min_us": 20_100.0},  # a hiccup: the median ignores it
    ]
    m = calibrate.measurement(batches)
    assert m == Measurement(median_us=20_150.0, min_us=20_040.0, spread_us=1_770.0, batches=3)
    assert calibrate.measurement([]) is None


@pytest.mark.parametrize(
    ("corr", "measured", "delay", "want"),
    [
        (0.0, 20_150.0, 20_000.0, 150.0),  # first round: the whole excess
        (150.0, 20_030.0, 20_000.0, 180.0),  # still 30 us slow: subtract 30 more
        (150.0, 19_900.0, 20_000.0, 50.0),  # overshot: give some back
        (0.0, 19_900.0, 20_000.0, 0.0),  # faster than configured: never add delay
        (0.0, 1_100.0, 500.0, 500.0),  # never more than the delay itself
        (0.0, 90_000.0, 20_000.0, calibrate.MAX_CORRECTION_US),  # a busy link, not the link
    ],
)
def test_next_correction(corr: float, measured: float, delay: float, want: float) -> None:
    assert calibrate.next_correction(corr, measured, delay, delay) == pytest.approx(want)


def test_summary_reports_the_residual_against_the_goal() -> None:
    before = Measurement(20_300.0, 20_120.0, 80.0, 6)
    after = Measurement(20_090.0, 20_001.0, 60.0, 6)
    s = calibrate.summary(before, after, 20_000.0, 120.0, 20_000.0, 2)
    assert s["overhead_us"] == 300.0 and s["overhead_min_us"] == 120.0
    assert s["correction_us"] == 120.0 and s["residual_us"] == 90.0
    assert s["residual_min_us"] == 1.0 and s["goal_us"] == 200.0 and s["ok"] is True
    worse = calibrate.summary(
        before, Measurement(20_250.0, 20_001.0, 60.0, 6), 20_000, 120, 20_000, 2
    )
    assert worse["ok"] is False


def test_effective_shape_subtracts_the_correction_but_never_below_zero() -> None:
    s = LinkShape(0.02, rate_bps=10)
    assert live.effective(s, 150.0).delay_s == pytest.approx(0.01985)
    assert live.effective(s, 0.0) is s
    assert live.effective(LinkShape(0.0001), 500.0).delay_s == 0.0


def test_calibratable() -> None:
    assert calibrate.calibratable({"kind": "emulated", "shape": {"delay_us": 0.0}})
    assert calibrate.calibratable({"shape": {"delay_us": 1000.0}})  # older records: emulated
    assert not calibrate.calibratable({"kind": "veth", "shape": {"delay_us": 0.0}})
    assert calibrate.calibratable({"kind": "veth", "shape": {"delay_us": 1000.0}})  # netem


class FakeLinks:
    """Links whose own latency is `fixed` (+ `variable` on the median); ping sees
    delay - correction + own latency. A link with `dead` answers nothing."""

    def __init__(self, fixed: list[float], variable: float = 40.0, dead: int | None = None):
        self.fixed, self.variable, self.dead = fixed, variable, dead
        self.corr = [0.0] * len(fixed)
        self.rounds = 0

    def set_correction(self, name: str, i: int, c: float, root: Path | None = None) -> None:
        self.corr[i] = c

    def measure(self, links: list[dict[str, Any]]) -> list[Measurement | None]:
        self.rounds += 1
        out: list[Measurement | None] = []
        for ln in links:
            i = ln["i"]
            if i == self.dead:
                out.append(None)
                continue
            base = ln["shape"]["delay_us"] - self.corr[i] + self.fixed[i]
            out.append(Measurement(base + self.variable, base, 10.0, 6))
        return out


def _lab(tmp_path: Path, n: int, kinds: list[str] | None = None) -> None:
    links = [
        {
            "i": i,
            "a": f"n{i}",
            "b": "hub",
            "kind": (kinds or ["emulated"] * n)[i],
            # a veth link without netem has no delay (only a rate)
            "shape": LinkShape(0.0 if kinds and kinds[i] == "veth" else 0.02).as_dict(),
        }
        for i in range(n)
    ]
    state.write({"name": "x", "engine": "userspace", "links": links}, tmp_path)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeLinks:
    f = FakeLinks([150.0, 300.0, 90.0])
    monkeypatch.setattr(calibrate.live, "set_correction", f.set_correction)
    monkeypatch.setattr(calibrate, "measure_links", f.measure)
    return f


def test_run_subtracts_each_links_fixed_latency_and_records_the_residual(
    tmp_path: Path, fake: FakeLinks
) -> None:
    _lab(tmp_path, 3)
    out = calibrate.run("x", tmp_path)
    assert fake.corr == [150.0, 300.0, 90.0]  # each link its own
    assert fake.rounds == 2  # measured, corrected, verified: the floor was hit, no third round
    for i, c in out.items():
        assert c["correction_us"] == fake.fixed[i]
        assert c["residual_min_us"] == 0.0  # the delay stays a floor
        assert c["residual_us"] == 40.0 and c["ok"] is True  # the variable part is left
        assert c["overhead_us"] == fake.fixed[i] + 40.0
    rec = state.read("x", tmp_path)
    assert rec is not None
    assert [ln["calibration"]["residual_us"] for ln in rec["links"]] == [40.0] * 3


def test_run_measures_again_when_the_first_correction_misses(
    tmp_path: Path, fake: FakeLinks, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the link's latency drops once corrected (the forwarder learnt its wake-up lead)
    real = fake.measure

    def learning(links: list[dict[str, Any]]) -> list[Measurement | None]:
        if fake.rounds == 1:
            fake.fixed[0] = 100.0
        return real(links)

    monkeypatch.setattr(calibrate, "measure_links", learning)
    _lab(tmp_path, 3)
    out = calibrate.run("x", tmp_path)
    assert fake.rounds == 3 and out[0]["rounds"] == 3 and out[1]["rounds"] == 2
    assert out[0]["correction_us"] == 100.0 and out[0]["residual_min_us"] == 0.0


def test_run_skips_bare_veth_links_and_reports_unanswered_ones(
    tmp_path: Path, fake: FakeLinks
) -> None:
    fake.dead = 2
    _lab(tmp_path, 3, ["emulated", "veth", "emulated"])
    out = calibrate.run("x", tmp_path)
    assert sorted(out) == [0, 2]
    assert "error" in out[2] and "residual_us" not in out[2]
    assert fake.corr[2] == 0.0  # nothing measured, nothing subtracted
