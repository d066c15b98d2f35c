from __future__ import annotations

import pytest

from netdiag.errors import InputError
from netdiag.lab import units


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("50ms", 0.05), ("250us", 250e-6), ("1.5s", 1.5), ("0", 0.0), (0.02, 0.02), ("100 ms", 0.1)],
)
def test_duration(text: str | float, seconds: float) -> None:
    assert units.duration_s(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "bps"),
    [
        ("100mbit", 100_000_000),
        ("1gbit", 1_000_000_000),
        ("500kbit", 500_000),
        ("12.5mbps", 100_000_000),
        ("0", 0),
        (10_000_000, 10_000_000),
    ],
)
def test_rate(text: str | int, bps: int) -> None:
    assert units.rate_bps(text) == bps


@pytest.mark.parametrize(
    ("text", "frac"), [("1%", 0.01), ("0.5%", 0.005), ("0.01", 0.01), (0, 0.0)]
)
def test_loss(text: str | float, frac: float) -> None:
    assert units.loss_fraction(text) == pytest.approx(frac)


def test_queue() -> None:
    assert units.queue_spec(100) == (100, 0.0)
    assert units.queue_spec("2bdp") == (0, 2.0)
    assert units.queue_spec("64") == (64, 0.0)


@pytest.mark.parametrize(
    ("fn", "bad"),
    [
        (units.duration_s, "50 parsecs"),
        (units.duration_s, "-1ms"),
        (units.duration_s, "11s"),
        (units.rate_bps, "fast"),
        (units.rate_bps, "100 furlongs"),
        (units.rate_bps, "10bit"),
        (units.loss_fraction, "150%"),
        (units.loss_fraction, "1ms"),
        (units.queue_spec, "0"),
        (units.queue_spec, 1.5),
        (units.duration_s, True),
    ],
)
def test_bad_values_name_the_fix(fn: object, bad: object) -> None:
    with pytest.raises(InputError) as e:
        fn(bad)  # type: ignore[operator]
    assert e.value.fix  # every error says how to fix it


def test_format_roundtrip() -> None:
    assert units.fmt_duration(0.05) == "50ms"
    assert units.fmt_duration(250e-6) == "250us"
    assert units.fmt_rate(100_000_000) == "100mbit"
    assert units.fmt_rate(0) == "unlimited"
