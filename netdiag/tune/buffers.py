"""Socket buffer sizes from the bandwidth-delay product (ESnet's rule).

ESnet (fasterdata.es.net, "Linux tuning"): a TCP buffer max of at least 2 x BDP lets one
flow fill the path (the second BDP covers the receiver's advertised-window lag and loss
recovery). We round up to a power of two, never lower a live max, and cap it so one socket
cannot take more than 1/8 of the kernel's TCP memory ceiling (tcp_mem[2] pages) — the
"bounded by memory" half of the rule.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from netdiag.errors import InputError

_RATE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(bit|bps|b)?(/s)?\s*$", re.I)
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmg]?)(i?b)?\s*$", re.I)
_MULT = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_BIN = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
MIN_MAX_BYTES = 4 << 20  # never plan a max under the common 4 MiB default


def parse_rate_bps(text: str) -> int:
    """'100mbit', '1gbit', '2.5G', '100000000' -> bits per second (decimal prefixes)."""
    m = _RATE.match(text)
    if not m:
        raise InputError(
            f"bad rate {text!r}", "write e.g. 100mbit, 1gbit or 2.5g (bits per second)"
        )
    return int(float(m.group(1)) * _MULT[m.group(2).lower()])


def parse_size_bytes(text: str) -> int:
    """'25MB', '16m', '1048576' -> bytes (binary prefixes, as the kernel's buffer sysctls)."""
    m = _SIZE.match(text)
    if not m:
        raise InputError(f"bad size {text!r}", "write e.g. 25MB, 16m or 1048576 (bytes)")
    return int(float(m.group(1)) * _BIN[m.group(2).lower()])


def bdp_bytes(rate_bps: int, rtt_us: int) -> int:
    if rate_bps <= 0 or rtt_us <= 0:
        raise InputError("rate and RTT must be positive", "e.g. --rtt 100ms --rate 100mbit")
    return rate_bps * rtt_us // 8 // 1_000_000


def next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


@dataclass(frozen=True)
class BufferPlan:
    bdp_bytes: int
    max_bytes: int
    cap_bytes: int
    rule: str


def plan_max(
    bdp: int, live_max: int, tcp_mem_max_pages: int, page_size: int | None = None
) -> BufferPlan:
    page = page_size or os.sysconf("SC_PAGE_SIZE")
    cap = tcp_mem_max_pages * page // 8
    want = max(next_pow2(2 * bdp), MIN_MAX_BYTES)
    chosen = min(max(want, live_max), max(cap, live_max))
    rule = (
        f"ESnet rule: buffer max ≥ 2 × BDP = 2 × {_h(bdp)} = {_h(2 * bdp)}; "
        f"rounded up to {_h(want)}; never below the live {_h(live_max)}; "
        f"capped at tcp_mem[2]/8 = {_h(cap)} → {_h(chosen)}"
    )
    if want > cap:
        rule += " (2 × BDP exceeds the memory bound; flows on this path will be buffer-limited)"
    return BufferPlan(bdp, chosen, cap, rule)


def _h(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def parse_duration_us(text: str) -> int:
    """'100ms', '50 ms', '1.5s', '250us' -> microseconds (bare numbers are milliseconds)."""
    m = re.match(r"^\s*([0-9]*\.?[0-9]+)\s*(us|ms|s)?\s*$", text)
    if not m:
        raise InputError(f"bad duration {text!r}", "write e.g. 100ms, 1.5s or 250us")
    mult = {"us": 1, "ms": 1000, "s": 1_000_000, None: 1000}[m.group(2)]
    return int(float(m.group(1)) * mult)
