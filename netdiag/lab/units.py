"""Parse the human units used in topology files and on the command line.

durations: "50ms", "250us", "1.5s", "0" (a bare number is seconds)
rates:     "100mbit", "1gbit", "500kbit", "12.5mbps" (bytes), "0" = unlimited (bare: bit/s)
loss:      "1%", "0.5%", "0.01" (a bare number is a fraction)
"""

from __future__ import annotations

import re

from netdiag.errors import InputError

_DURATION = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0}
_RATE = {
    "bit": 1.0,
    "kbit": 1e3,
    "mbit": 1e6,
    "gbit": 1e9,
    "bps": 8.0,
    "kbps": 8e3,
    "mbps": 8e6,
    "gbps": 8e9,
}
_NUM = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-zA-Zµ%]*)\s*$")


def _split(value: str, what: str, where: str) -> tuple[float, str]:
    m = _NUM.match(value)
    if not m:
        raise InputError(f"{where}: {value!r} is not a {what}", _hint(what))
    return float(m.group(1)), m.group(2).lower()


def _hint(what: str) -> str:
    return {
        "duration": 'write it like "50ms", "250us" or "1.5s"',
        "rate": 'write it like "100mbit", "1gbit" or "500kbit" ("0" = unlimited)',
        "loss": 'write it like "1%" or "0.01"',
        "queue": 'write it like 1000 (packets) or "1.5bdp" (bandwidth-delay products)',
    }[what]


def duration_s(value: str | float | int, where: str = "duration") -> float:
    if isinstance(value, bool):
        raise InputError(f"{where}: {value!r} is not a duration", _hint("duration"))
    if isinstance(value, int | float):
        v = float(value)
    else:
        num, unit = _split(value, "duration", where)
        if unit and unit not in _DURATION:
            raise InputError(f"{where}: unknown time unit {unit!r} in {value!r}", _hint("duration"))
        v = num * _DURATION.get(unit, 1.0)
    if v < 0 or v > 10:
        raise InputError(f"{where}: {value!r} is out of range", "use 0 to 10 s")
    return v


def rate_bps(value: str | float | int, where: str = "rate") -> int:
    if isinstance(value, bool):
        raise InputError(f"{where}: {value!r} is not a rate", _hint("rate"))
    if isinstance(value, int | float):
        v = float(value)
    else:
        num, unit = _split(value, "rate", where)
        if unit and unit not in _RATE:
            raise InputError(f"{where}: unknown rate unit {unit!r} in {value!r}", _hint("rate"))
        v = num * _RATE.get(unit, 1.0)
    if v < 0 or v > 100e9 or (0 < v < 8000):
        raise InputError(
            f"{where}: {value!r} is out of range", "use 8kbit to 100gbit, or 0 for unlimited"
        )
    return int(v)


def loss_fraction(value: str | float | int, where: str = "loss") -> float:
    if isinstance(value, bool):
        raise InputError(f"{where}: {value!r} is not a loss rate", _hint("loss"))
    if isinstance(value, int | float):
        v = float(value)
    else:
        num, unit = _split(value, "loss", where)
        if unit not in ("", "%"):
            raise InputError(f"{where}: {value!r} is not a loss rate", _hint("loss"))
        v = num / 100 if unit == "%" else num
    if not 0 <= v <= 1:
        raise InputError(f"{where}: {value!r} is out of range", "use 0% to 100%")
    return v


def queue_spec(value: str | int, where: str = "queue") -> tuple[int, float]:
    """(packets, bdp multiple): exactly one of them is non-zero."""
    if isinstance(value, bool):
        raise InputError(f"{where}: {value!r} is not a queue size", _hint("queue"))
    if isinstance(value, int):
        num, unit = float(value), ""
    elif isinstance(value, float):
        raise InputError(f"{where}: {value!r} is not a whole number of packets", _hint("queue"))
    else:
        num, unit = _split(value, "queue", where)
    if unit in ("", "p", "pkt", "pkts", "packets"):
        if num != int(num) or not 1 <= num <= 1_000_000:
            raise InputError(f"{where}: {value!r} packets is out of range", "use 1 to 1000000")
        return int(num), 0.0
    if unit == "bdp":
        if not 0 < num <= 100:
            raise InputError(f"{where}: {value!r} is out of range", "use 0.1bdp to 100bdp")
        return 0, num
    raise InputError(f"{where}: unknown queue unit {unit!r} in {value!r}", _hint("queue"))


def fmt_duration(s: float) -> str:
    if s == 0:
        return "0"
    if s < 1e-3:
        return f"{s * 1e6:g}us"
    if s < 1:
        return f"{s * 1e3:g}ms"
    return f"{s:g}s"


def fmt_rate(bps: int) -> str:
    if bps == 0:
        return "unlimited"
    for unit, f in (("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3)):
        if bps >= f:
            return f"{bps / f:g}{unit}"
    return f"{bps}bit"
