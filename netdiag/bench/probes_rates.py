"""Offered loads of `netdiag bench probes overhead --rates`: what iperf3 runs and how the
path is set for each rate token.

    max            one unpaced flow (CPU-bound bulk; TSO/GSO: few, large skbs, few events)
    4G, 500M, …    one flow paced with iperf3 -b: fewer ACKs per second
    seg:N[:MSS]    N unpaced parallel flows (-P N) with every skb one segment: gso_max_segs 1
                   on the client's and the server's links for the rate's runs (restored after),
                   optionally a smaller MSS (-M): every segment and every ACK is a tcp_probe
                   event
    small:N[:LEN]  N unpaced parallel flows of LEN-byte writes (default 128) with TCP_NODELAY
                   (iperf3 -N -l LEN): every write a segment, so a high event rate at a low
                   byte rate — the "100 k events/s" rows

Pure parsing here (unit-tested); `prepared` changes the testbed's links for one rate only.
"""

from __future__ import annotations

import contextlib
import json
import re
import statistics
import subprocess
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from netdiag.errors import InputError

_PACED = re.compile(r"\d+(\.\d+)?[KMG]?")
_SEG = re.compile(r"seg:(\d+)(?::(\d+))?")
_SMALL = re.compile(r"small:(\d+)(?::(\d+))?")


@dataclass(frozen=True)
class RateSpec:
    token: str
    iperf_args: tuple[str, ...]
    one_segment: bool = False
    flows: int = 1


def parse(token: str) -> RateSpec:
    """A `--rates` token -> the iperf3 arguments and path settings it stands for."""
    if token == "max":
        return RateSpec(token, ())
    if _PACED.fullmatch(token):
        return RateSpec(token, ("-b", token))
    m = _SEG.fullmatch(token)
    if m:
        flows = int(m.group(1))
        mss = int(m.group(2)) if m.group(2) else None
        if not 1 <= flows <= 128:
            raise InputError(f"rate {token!r}: 1 to 128 flows", "e.g. seg:4")
        if mss is not None and not 88 <= mss <= 1460:
            raise InputError(f"rate {token!r}: MSS from 88 to 1460 bytes", "e.g. seg:4:536")
        args = ["-P", str(flows)] if flows > 1 else []
        if mss is not None:
            args += ["-M", str(mss)]
        return RateSpec(token, tuple(args), one_segment=True, flows=flows)
    m = _SMALL.fullmatch(token)
    if m:
        flows = int(m.group(1))
        size = int(m.group(2)) if m.group(2) else 128
        if not 1 <= flows <= 128 or not 1 <= size <= 65536:
            raise InputError(f"rate {token!r}: 1 to 128 flows of 1 to 65536 bytes", "small:4:128")
        return RateSpec(token, ("-P", str(flows), "-N", "-l", str(size)), flows=flows)
    raise InputError(
        f"{token!r} is not a rate",
        "use max, a paced rate (4G, 500M), seg:N[:MSS] or small:N[:LEN]",
    )


def parse_list(text: str) -> tuple[RateSpec, ...]:
    specs = tuple(parse(t.strip()) for t in text.split(",") if t.strip())
    if not specs:
        raise InputError(f"--rates {text!r} has no rate", "e.g. --rates max,4G,seg:4")
    return specs


def iperf_args(token: str) -> list[str]:
    return list(parse(token).iperf_args)


def gso_segs_of(ip_link_json: str) -> dict[str, int]:
    """Device -> gso_max_segs from `ip -d -j link` (without lo)."""
    return {
        d["ifname"]: int(d["gso_max_segs"])
        for d in json.loads(ip_link_json or "[]")
        if d.get("ifname") != "lo" and "gso_max_segs" in d
    }


def _gso_segs(ns: str) -> dict[str, int]:
    cmd = ["ip", "-n", ns, "-d", "-j", "link"]
    return gso_segs_of(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


def _set_gso_segs(ns: str, segs: dict[str, int]) -> None:
    for dev, n in segs.items():
        cmd = ["ip", "-n", ns, "link", "set", "dev", dev, "gso_max_segs", str(n)]
        subprocess.run(cmd, check=True)


@contextlib.contextmanager
def prepared(namespaces: tuple[str, ...], token: str) -> Iterator[RateSpec]:
    """The path set for one rate's runs: one-segment skbs in `namespaces` for seg:N."""
    spec = parse(token)
    if not spec.one_segment:
        yield spec
        return
    before = {ns: _gso_segs(ns) for ns in namespaces}
    try:
        for ns, segs in before.items():
            _set_gso_segs(ns, dict.fromkeys(segs, 1))
        yield spec
    finally:
        for ns, segs in before.items():  # as they were
            _set_gso_segs(ns, segs)


def figures(
    rate: str,
    variant: str,
    sample_ms: float,
    off: list[float],
    on: list[float],
    tracer_runs: Sequence[Any],
    loads: Sequence[float] = (),
) -> dict[str, Any]:
    """One row of `by_rate`: the cost of one probe variant at one offered rate; `loads`: the
    host's 1-min load average at each round's start (a throughput ratio means little on a
    busy shared host)."""
    spec = parse(rate)
    # lines whose stats window counted runs (a window with none has no ns per run)
    busy = [ln for t in tracer_runs for ln in t.lines if (ln.get("bpf_runs") or 0) > 0]
    return {
        "rate": rate,
        "variant": variant,
        "sample_ms": sample_ms,
        "throughput_off_bps": round(statistics.mean(off)),
        "throughput_on_bps": round(statistics.mean(on)),
        "throughput_ratio_on_off": round(statistics.mean(on) / statistics.mean(off), 4),
        "pair_ratio_median": round(
            statistics.median(b / a for a, b in zip(off, on, strict=True)), 4
        ),
        "events_per_s_mean": round(statistics.mean(x["events_per_s"] for x in busy), 1)
        if busy
        else None,
        # ns per run over all the windows' runs: the figure (no unweighted per-line mean: a
        # short run's partial, near-idle lines, where one run costs more, would weigh as much
        # as its busy ones)
        "ns_per_event_weighted": weighted_ns(busy),
        "events_per_s_max": max((x["events_per_s"] for x in busy), default=None),
        "bpf_cpu_pct_mean": round(statistics.mean(x["bpf_cpu_pct"] for x in busy), 3)
        if busy
        else None,
        # the tracer's own user + system CPU during the "on" runs (% of one CPU, mean of runs)
        "tracer_cpu_pct": _mean_or_none(getattr(t, "cpu_pct", None) for t in tracer_runs),
        "lost_events": sum(int(x.get("lost_events", 0)) for t in tracer_runs for x in t.lines),
        **lost_split([t.lines for t in tracer_runs]),
        "flows": spec.flows,
        "one_segment_skbs": spec.one_segment,
        "host_load_avg_1m_min": min(loads, default=None),
        "host_load_avg_1m_max": max(loads, default=None),
    }


def _mean_or_none(values: Iterable[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return round(statistics.mean(got), 3) if got else None


def weighted_ns(lines: Sequence[dict[str, Any]]) -> float | None:
    """ns per program run over all the lines' runs (each line: its interval's runs and mean)."""
    counted = [x for x in lines if (x.get("bpf_runs") or 0) > 0]
    runs = sum(int(x["bpf_runs"]) for x in counted)
    if runs == 0:
        return None
    total = sum(float(x["bpf_ns_per_event"]) * int(x["bpf_runs"]) for x in counted)
    return round(total / runs, 1)


def lost_split(runs: Sequence[Sequence[dict[str, Any]]]) -> dict[str, int]:
    """Lost events of tracer runs by cause, from each run's last cumulative `stats`: the map
    was full (`lost_events` slot) or the kernel skipped the program (`recursion_misses`)."""
    full = misses = 0
    for lines in runs:
        stats = [x["stats"] for x in lines if isinstance(x.get("stats"), dict)]
        if stats:
            full += int(stats[-1].get("lost_events", 0))
            misses += int(stats[-1].get("recursion_misses", 0))
    return {"lost_map_full": full, "lost_recursion_misses": misses}
