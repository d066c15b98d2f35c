"""A bottleneck-bandwidth estimate that a burst of ACKs cannot inflate (sans-IO).

tcp_info's delivery rate is one sample over about one round trip (tcp_rate.c: segments
delivered / max(send interval, ACK interval), dropped when shorter than min RTT). ACK
compression — a receiver or sender descheduled, then a burst of ACKs — shrinks both intervals,
and one sample can read twice the link: 115 Mbit/s on a 50 Mbit/s TBF with one core of a
2-core host busy. bbr's bw is a max filter over ~10 round trips of those samples, so it keeps
such a burst for its whole window (with a min RTT of tens of µs, 10 round trips are < 1 ms).

What a burst cannot inflate: bytes acked over a span of many round trips. Over a span in which
the path bound the sender (data queued the whole span, neither rwnd- nor sndbuf-limited, the
delivery samples at both ends not app-limited), bytes_acked / span is the rate the path
sustained. A one-round-trip sample may beat that only by what a span average hides (growth or
probing within the span): a sample above TOLERANCE × the best sustained span is a burst and is
rejected. The estimate is then bbr's latest accepted bw when bbr runs (its own filter), else
the best of the sustained rate and the accepted samples.

Without a path-bound span (every span app-, rwnd- or sndbuf-limited, or the window shorter
than one span), samples cannot be checked: the result says `checked=False`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from netdiag.measure.sockdiag import TcpInfo

# a span must cover several round trips and enough wall time that a sample's timestamp jitter
# on a loaded host (a few ms) moves its rate by a few percent, not by half
MIN_SPAN_S = 0.2
MIN_SPAN_RTTS = 4
BUSY_SHARE = 0.9  # data queued this share of the span
SELF_LIMITED_SHARE = 0.2  # rwnd + sndbuf time under this share of busy time
TOLERANCE = 1.15  # a sample may beat the best sustained span by this factor


@dataclass(frozen=True)
class Point:
    """One sock_diag observation: monotonic time, tcp_info, bbr's bw (None: not bbr)."""

    t_s: float
    info: TcpInfo
    bbr_bw_bps: int | None = None


@dataclass(frozen=True)
class BwEstimate:
    bps: int | None
    source: str  # "bbr" | "delivery_rate" | "sustained" | "none"
    checked: bool  # a path-bound span existed to check the samples against
    sustained_bps: int | None  # best path-bound span: bytes acked / span
    delivery_bps: int | None  # best non-app-limited delivery sample that was accepted
    bbr_bps: int | None  # bbr's latest accepted bw (None: not bbr, or every one rejected)
    bbr_raw_bps: int | None  # bbr's latest bw as the kernel reported it
    rejected: int  # samples (delivery or bbr) above TOLERANCE × sustained

    @property
    def cap_bps(self) -> int | None:
        return int(TOLERANCE * self.sustained_bps) if self.sustained_bps else None


def _path_bound(a: TcpInfo, b: TcpInfo, span_us: float) -> bool:
    busy = b.busy_time_us - a.busy_time_us
    own = (b.rwnd_limited_us - a.rwnd_limited_us) + (b.sndbuf_limited_us - a.sndbuf_limited_us)
    return (
        busy >= BUSY_SHARE * span_us
        and own < SELF_LIMITED_SHARE * busy
        and not a.delivery_rate_app_limited
        and not b.delivery_rate_app_limited
        and b.bytes_acked > a.bytes_acked
    )


def sustained_bps(points: Sequence[Point]) -> int | None:
    """Best rate over spans ≥ MIN_SPAN_S and ≥ MIN_SPAN_RTTS min RTTs in which the path bound
    the sender; None when there is no such span."""
    rtts = [p.info.min_rtt_us for p in points if 0 < p.info.min_rtt_us < 0xFFFFFFFF]
    min_span_s = max(MIN_SPAN_S, MIN_SPAN_RTTS * (min(rtts) if rtts else 0) / 1e6)
    best: float | None = None
    j = 0
    for i, a in enumerate(points):
        j = max(j, i + 1)
        while j < len(points) and points[j].t_s - a.t_s < min_span_s:
            j += 1
        if j >= len(points):
            break
        b = points[j]
        span_us = (b.t_s - a.t_s) * 1e6
        if _path_bound(a.info, b.info, span_us):
            # our timestamps precede each dump; on a loaded host one dump can run late and
            # shorten the span we measured. busy time is the kernel's own clock, read with the
            # bytes: the longer of the two keeps a late dump from inflating the rate
            busy_us = b.info.busy_time_us - a.info.busy_time_us
            rate = (b.info.bytes_acked - a.info.bytes_acked) * 8 / (max(span_us, busy_us) / 1e6)
            best = rate if best is None else max(best, rate)
    return int(best) if best is not None else None


def estimate(points: Sequence[Point]) -> BwEstimate:
    """Points of one socket, oldest first -> its bottleneck-bandwidth estimate."""
    sustained = sustained_bps(points)
    cap = TOLERANCE * sustained if sustained else None

    def ok(v: int) -> bool:
        return cap is None or v <= cap

    rates = [
        p.info.delivery_rate_bps
        for p in points
        if not p.info.delivery_rate_app_limited and p.info.delivery_rate_bps > 0
    ]
    bbrs = [p.bbr_bw_bps for p in points if p.bbr_bw_bps]
    accepted = [r for r in rates if ok(r)]
    bbr_ok = [v for v in bbrs if ok(v)]
    rejected = (len(rates) - len(accepted)) + (len(bbrs) - len(bbr_ok))
    delivery = max(accepted) if accepted else None
    bbr = bbr_ok[-1] if bbr_ok else None
    if bbr is not None:
        bps, src = bbr, "bbr"
    elif delivery is not None and (sustained is None or delivery >= sustained):
        bps, src = delivery, "delivery_rate"
    elif sustained is not None:
        bps, src = sustained, "sustained"
    else:
        bps, src = None, "none"
    return BwEstimate(
        bps=bps,
        source=src,
        checked=sustained is not None,
        sustained_bps=sustained,
        delivery_bps=delivery,
        bbr_bps=bbr,
        bbr_raw_bps=bbrs[-1] if bbrs else None,
        rejected=rejected,
    )
