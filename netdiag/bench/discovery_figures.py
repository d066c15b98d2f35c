"""`bench discovery` figures: lookups against the topology's RTTs, and discovery bytes.

A lookup's latency is set beside two path RTTs of the lab (routes over its links): to the
nearest node the lookup found (the target's closest node: no lookup can end sooner than one
round trip to it) and the largest from the asker to any honest node (a lookup that queries
everyone in α-wide rounds waits at least that long once). On loopback both are 0 and the
ratios are not given.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from typing import Any

TCPIP_HEADER_BYTES = 52  # IPv4 20 + TCP 20 + timestamps 12, per segment (an estimate)


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def r3(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def lookup_rows(
    lookups: list[dict[str, Any]],
    host_of: dict[str, str],
    rtt_s: Callable[[str, str], float | None],
) -> list[dict[str, Any]]:
    """One row per lookup (asker node name -> its address in ``host_of``) with the path RTTs to
    the nearest node found and the farthest honest node."""
    honest = list(host_of.values())
    out = []
    for lk in lookups:
        me = host_of[lk["node"]]
        nearest = str(lk.get("nearest") or "").rsplit(":", 1)[0]
        rtt_near = rtt_s(me, nearest) if nearest else None
        far = [x for h in honest if h != me and (x := rtt_s(me, h)) is not None]
        rtt_far = max(far) if far else None
        sec = float(lk["seconds"])
        out.append(
            {
                "node": lk["node"],
                "purpose": lk["purpose"],
                "hops": lk["hops"],
                "queries": lk.get("queries"),
                "seconds": sec,
                "nearest": nearest or None,
                "rtt_nearest_ms": None if rtt_near is None else round(rtt_near * 1000, 2),
                "rtt_max_ms": None if rtt_far is None else round(rtt_far * 1000, 2),
                "in_nearest_rtts": round(sec / rtt_near, 2) if rtt_near else None,
                "in_max_rtts": round(sec / rtt_far, 2) if rtt_far else None,
            }
        )
    return out


def lookup_summary(rows: list[dict[str, Any]], n: int, purpose: str = "all") -> dict[str, Any]:
    hops = [r["hops"] for r in rows]
    secs = [r["seconds"] for r in rows]

    def p50(key: str) -> float | None:
        xs = [float(r[key]) for r in rows if r.get(key) is not None]
        return round(statistics.median(xs), 2) if xs else None

    queries = [float(r["queries"]) for r in rows if r.get("queries") is not None]
    return {
        "purpose": purpose,
        "lookups": len(rows),
        "hops_p50": statistics.median(hops) if hops else None,
        "hops_max": max(hops) if hops else None,
        "hops_goal": math.ceil(math.log2(n)),
        "queries_p50": statistics.median(queries) if queries else None,
        "latency_p50_ms": r3(1000 * statistics.median(secs)) if secs else None,
        "latency_p90_ms": r3(1000 * pct(secs, 0.9)) if secs else None,
        "rtt_nearest_p50_ms": p50("rtt_nearest_ms"),
        "rtt_max_p50_ms": p50("rtt_max_ms"),
        "latency_in_nearest_rtts_p50": p50("in_nearest_rtts"),
        "latency_in_max_rtts_p50": p50("in_max_rtts"),
    }


def bytes_per_min(d: dict[str, float]) -> dict[str, float]:
    """One node's discovery bytes per minute, split, and the total."""
    headers = d["probe_segments"] * TCPIP_HEADER_BYTES
    return {
        "frames": d["frames"],
        "probe_payload": d["probe_payload"],
        "probe_headers_est": headers,
        "total": d["frames"] + d["probe_payload"] + headers,
    }


def traffic_summary(per_min: dict[str, dict[str, float]], window_s: float) -> dict[str, Any]:
    rows = [bytes_per_min(v) for v in per_min.values()]
    out: dict[str, Any] = {"window_s": window_s, "nodes": len(rows)}
    for key in ("frames", "probe_payload", "probe_headers_est", "total"):
        xs = [r[key] for r in rows]
        out[f"{key}_per_node_per_min_mean"] = round(statistics.mean(xs)) if xs else None
    totals = [r["total"] for r in rows]
    out["total_per_node_per_min_max"] = round(max(totals)) if totals else None
    return out


def rpc_summary(phase: str, counts: dict[str, dict[str, float]]) -> dict[str, Any]:
    """FindNode requests by outcome, summed over the nodes (``counts``: per node, requests in
    the phase): how many timed out or found nobody at the address, beside those answered."""
    out: dict[str, Any] = {"phase": phase}
    for key in sorted({k for v in counts.values() for k in v if k.startswith("find_")}):
        out[key] = round(sum(v.get(key, 0.0) for v in counts.values()))
    return out


def path_rtt_summary(
    hosts: list[str], rtt_s: Callable[[str, str], float | None]
) -> dict[str, float | None]:
    rtts = [
        x for i, a in enumerate(hosts) for b in hosts[i + 1 :] if (x := rtt_s(a, b)) is not None
    ]
    return {
        "path_rtt_median_ms": round(1000 * statistics.median(rtts), 2) if rtts else None,
        "path_rtt_max_ms": round(1000 * max(rtts), 2) if rtts else None,
    }
