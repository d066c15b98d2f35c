"""Figures of `bench p2p` from its raw records (pure functions: unit-tested without a cluster)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Row = Mapping[str, Any]


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) — no interpolation, so p100 is the max."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, math.ceil(q / 100 * len(s)) - 1)
    return float(s[k])


def propagation_summary(rows: Iterable[Row], variant: str) -> list[dict[str, Any]]:
    """One row per kind: delay percentiles (ms) of delivered arrivals, bound, ratio, duplicates."""
    by_kind: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        if r.get("variant") == variant:
            by_kind[str(r["kind"])].append(r)
    out = []
    for kind in sorted(by_kind, key=lambda k: (k != "block", k)):
        rs = by_kind[kind]
        delays = [float(r["delay_us"]) / 1000 for r in rs if r.get("delay_us") is not None]
        bounds = [
            float(r["lower_bound_us"]) / 1000 for r in rs if r.get("lower_bound_us") is not None
        ]
        sf_bounds = [float(r["sf_bound_us"]) / 1000 for r in rs if r.get("sf_bound_us")]
        dups = [float(r["duplicates"]) for r in rs if r.get("duplicates") is not None]
        errs = [float(r["error_us"]) / 1000 for r in rs if r.get("error_us") is not None]
        # what each hop adds beyond the links' delay (validation, queueing, serialisation)
        per_hop = [
            (float(r["delay_us"]) - float(r["lower_bound_us"])) / 1000 / int(r["hops"])
            for r in rs
            if r.get("delay_us") is not None
            and r.get("lower_bound_us") is not None
            and r.get("hops")
        ]
        p99, lb99 = percentile(delays, 99), percentile(bounds, 99)
        sf99 = percentile(sf_bounds, 99)
        out.append(
            {
                "variant": variant,
                "kind": kind,
                "messages": len({(r.get("round"), r["msg"]) for r in rs}),
                "arrivals": len(rs),
                "p50_ms": percentile(delays, 50),
                "p90_ms": percentile(delays, 90),
                "p99_ms": p99,
                "max_ms": percentile(delays, 100),
                "lower_bound_p99_ms": lb99,
                "p99_over_bound": (p99 / lb99) if p99 is not None and lb99 else None,
                # the links' delay plus the message's serialisation on every hop (absent from
                # results made before it was recorded)
                "sf_bound_p99_ms": sf99,
                "p99_over_sf_bound": (p99 / sf99) if p99 is not None and sf99 else None,
                "excess_per_hop_p50_ms": percentile(per_hop, 50),
                "excess_per_hop_p99_ms": percentile(per_hop, 99),
                "delivery_ratio": len(delays) / len(rs) if rs else None,
                "duplicates_per_msg": (sum(dups) / len(dups)) if dups else None,
                "duplicates_max": max(dups) if dups else None,
                # how well the times are known: half the REST round trips to origin and node
                "time_error_p99_ms": percentile(errs, 99),
            }
        )
    return out


def transport_summary(samples: Sequence[Row], variant: str, duration_s: float) -> dict[str, Any]:
    """Bytes and retransmits over the load phase (per-socket deltas), RTT/cwnd/BDP medians."""
    mine = [s for s in samples if s.get("variant") == variant]
    first: dict[Any, Row] = {}
    last: dict[Any, Row] = {}
    for s in mine:
        key = (s["node"], s["sock_cookie"])
        first.setdefault(key, s)
        last[key] = s
    acked = sum(max(0, int(last[k]["bytes_acked"]) - int(first[k]["bytes_acked"])) for k in last)
    retrans = sum(
        max(0, int(last[k]["retrans_total"]) - int(first[k]["retrans_total"])) for k in last
    )
    srtt = [float(s["srtt_us"]) for s in mine if s.get("srtt_us")]
    cwnd = [float(s["cwnd_segs"]) for s in mine if s.get("cwnd_segs")]
    bdp = [
        float(s["min_rtt_us"]) / 1e6 * float(s["delivery_rate_bps"]) / 8
        for s in last.values()
        if s.get("min_rtt_us") and s.get("delivery_rate_bps")
    ]
    return {
        "variant": variant,
        "sockets": len(last),
        "throughput_bps": acked * 8 / duration_s if duration_s > 0 else None,
        "retrans_segs": retrans,
        "srtt_p50_us": percentile(srtt, 50),
        "srtt_p99_us": percentile(srtt, 99),
        "cwnd_p50_segs": percentile(cwnd, 50),
        "bdp_p50_bytes": percentile(bdp, 50),
    }


def lower_bounds_us(
    one_way_s: Mapping[str, Mapping[str, float]], origin: str, node: str
) -> float | None:
    d = one_way_s.get(origin, {}).get(node)
    return None if d is None else round(d * 1e6, 1)
