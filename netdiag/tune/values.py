"""Check a sysctl value before it is planned, so bad input fails with nothing journaled.

Three checks, from most to least specific:
- ranges the kernel enforces (its proc handler's min/max) for the keys tune plans itself;
- vectors (tcp_rmem "min default max"): the kernel writes the values given and keeps the
  rest, so a short vector is completed from the live one — the plan shows what the kernel
  will hold, and that is what the journal records;
- any key whose live value is integers takes integers, as many as it holds.
"""

from __future__ import annotations

from netdiag.errors import InputError

INT_MAX = 2**31 - 1
UINT_MAX = 2**32 - 1

# key -> (min, max) per element, as the kernel's proc_do*_minmax handler enforces them
RANGES: dict[str, tuple[int, int]] = {
    "net.core.somaxconn": (0, INT_MAX),
    "net.core.netdev_max_backlog": (0, INT_MAX),
    "net.core.rmem_max": (0, INT_MAX),
    "net.core.wmem_max": (0, INT_MAX),
    "net.core.rmem_default": (0, INT_MAX),
    "net.core.wmem_default": (0, INT_MAX),
    "net.ipv4.tcp_mtu_probing": (0, 2),
    "net.ipv4.tcp_slow_start_after_idle": (0, 1),
    "net.ipv4.tcp_notsent_lowat": (0, UINT_MAX),
    "net.ipv4.tcp_syn_retries": (1, 127),
    "net.ipv4.tcp_synack_retries": (0, 255),
    "net.ipv4.tcp_rmem": (1, INT_MAX),
    "net.ipv4.tcp_wmem": (1, INT_MAX),
    "net.ipv4.tcp_max_syn_backlog": (0, INT_MAX),
    "fs.nr_open": (0, INT_MAX),
    "fs.file-max": (0, 2**63 - 1),
}
# vectors whose elements must not decrease (min <= default <= max)
ORDERED = ("net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem", "net.ipv4.tcp_mem")


def _ints(text: str) -> list[int] | None:
    try:
        return [int(t) for t in text.split()]
    except ValueError:
        return None


def check(key: str, value: str, live: str) -> str:
    """The value the kernel will hold after writing `value` (whitespace normalised, a short
    vector completed from `live`), or InputError saying what is wrong and how to write it."""
    new = " ".join(str(value).split())
    if not new:
        raise InputError(f"empty value for {key}", f"give a value: --set {key}=VALUE")
    live_ints = _ints(live)
    if live_ints is None:
        return new  # a word-valued key (default_qdisc, a cc name): the kernel judges it
    example = " ".join(str(x) for x in live_ints)
    got = _ints(new)
    if got is None or len(got) > len(live_ints):
        what = "an integer" if len(live_ints) == 1 else f"{len(live_ints)} integers"
        raise InputError(
            f"{key}={new!r}: the kernel takes {what} here", f"e.g. --set {key}='{example}'"
        )
    got += live_ints[len(got) :]  # what the kernel keeps for elements not written
    lo, hi = RANGES.get(key, (-(2**63), 2**63 - 1))
    bad = [x for x in got if not lo <= x <= hi]
    if bad:
        raise InputError(
            f"{key}={new!r} is out of range: {bad[0]} is not within {lo}..{hi}",
            f"give a value from {lo} to {hi}",
        )
    if key in ORDERED and got != sorted(got):
        raise InputError(
            f"{key}={' '.join(map(str, got))!r}: min, default and max must not decrease",
            f"e.g. --set {key}='{example}'",
        )
    return " ".join(str(x) for x in got)
