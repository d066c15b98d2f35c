"""Ping as the lab measures RTT: the one parser of ping's summary line and batched RTT
probes between lab nodes (used by bench emulator, bench probes and the lab's tests)."""

from __future__ import annotations

import re
import statistics
import subprocess
from collections.abc import Sequence
from typing import Protocol

from netdiag.errors import NetdiagError


class Pinger(Protocol):
    """What ping_rtt needs of a lab (lab.Lab): a node's address, a command in a node."""

    def addr(self, node: str) -> str: ...
    def exec(
        self, node: str, argv: Sequence[str], *, timeout: float | None = None
    ) -> subprocess.CompletedProcess[str]: ...


_SUMMARY = re.compile(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms")


def parse_ping(out: str) -> dict[str, float]:
    m = _SUMMARY.search(out)
    if not m:
        raise NetdiagError(f"ping printed no RTT summary:\n{out[-300:]}", "is the lab link up?")
    return _summary(m.groups())


def summaries(out: str) -> list[dict[str, float]]:
    """Every summary line in the output of several pings run one after another."""
    return [_summary(m) for m in _SUMMARY.findall(out)]


def _summary(ms: Sequence[str]) -> dict[str, float]:
    """min/avg/max/mdev in ms, as ping prints them -> µs."""
    mn, avg, mx, mdev = (float(x) * 1e3 for x in ms)
    return {"rtt_min_us": mn, "rtt_avg_us": avg, "rtt_max_us": mx, "rtt_mdev_us": mdev}


def ping_rtt(lab: Pinger, src: str, dst: str, batches: int = 8, count: int = 8) -> dict[str, float]:
    """RTT by ping in batches: the median of batch means is robust against a scheduling
    hiccup of this shared host, and keeps ping's µs precision (per-reply lines print only
    3 significant digits: "time=100 ms")."""
    means, mins, maxs = [], [], []
    for _ in range(batches):
        r = lab.exec(
            src, ["ping", "-n", "-q", "-c", str(count), "-i", "0.02", lab.addr(dst)], timeout=60
        )
        if "= " not in r.stdout:
            continue  # every probe of this batch lost (possible at high loss)
        p = parse_ping(r.stdout)
        means.append(p["rtt_avg_us"])
        mins.append(p["rtt_min_us"])
        maxs.append(p["rtt_max_us"])
    if not means:
        raise NetdiagError(f"ping {src} -> {dst} got no replies", "is the lab up?")
    return {
        "rtt_median_us": round(statistics.median(means), 1),
        "rtt_avg_us": round(statistics.fmean(means), 1),
        "rtt_min_us": round(min(mins), 1),
        "rtt_max_us": round(max(maxs), 1),
    }
