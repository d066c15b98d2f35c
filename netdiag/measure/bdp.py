"""Bandwidth-delay product figures per connection from sock_diag samples.

Inputs are tcp_info/bbr_info samples (sockdiag.TcpConn) of one socket over a short window:
- min RTT: tcpi_min_rtt (the kernel's windowed minimum), BBR's min_rtt when bbr runs;
- bandwidth: BBR's bw estimate when bbr runs, else the largest delivery-rate sample that was
  not app-limited (app-limited samples measure the application, not the path), each checked
  against the rate the path sustained over spans of many round trips (bwfilter: a burst of
  ACKs cannot inflate it);
- limited-by: the chrono counters tcpi_busy_time (all sending time), tcpi_rwnd_limited and
  tcpi_sndbuf_limited; the rest of busy time is cwnd (or pacing) limited.

These are figures, not a judgement: the verdict (what limits the connection) comes from the
verdict engine in netdiag.diagnose, which estimates the path's bottleneck apart from the
connection's own, possibly limited, rate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from netdiag.measure import bwfilter
from netdiag.measure.sockdiag import TcpConn


@dataclass(frozen=True)
class Limits:
    busy_us: int
    rwnd: float  # fractions of busy time
    sndbuf: float
    cwnd: float
    window: str  # "sample" (deltas over the sampling window) or "lifetime" (since connect)


@dataclass(frozen=True)
class BdpReport:
    sock_cookie: int
    peer: str
    local: str
    state: str
    cc: str | None
    min_rtt_us: int | None
    srtt_us: int | None
    # best non-app-limited sample below the burst cap; None if every sample was app-limited
    delivery_rate_bps: int | None
    app_limited_samples: int
    samples: int
    bbr_bw_bps: int | None
    bbr_min_rtt_us: int | None
    bw_bps: int | None
    bw_source: str
    sustained_bps: int | None  # best span of many RTTs in which the path bound the sender
    bw_checked: bool  # samples were checked against the sustained rate
    rejected_samples: int  # delivery/bbr samples above the burst cap (ACK compression)
    bdp_bytes: int | None
    snd_cwnd: int | None
    snd_mss: int | None
    cwnd_bytes: int | None
    cwnd_over_bdp: float | None
    snd_wnd_bytes: int | None  # the peer's advertised receive window
    retrans: int
    limits: Limits | None
    rmem_max_bytes: int | None
    wmem_max_bytes: int | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def human_bytes(n: float) -> str:
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n:.0f} B"


def limits_of(first: TcpConn, last: TcpConn) -> Limits | None:
    a, b = first.info, last.info
    if b is None:
        return None
    window = "lifetime"
    busy, rwnd, sndbuf = b.busy_time_us, b.rwnd_limited_us, b.sndbuf_limited_us
    if a is not None and b.busy_time_us - a.busy_time_us > 0:
        window = "sample"
        busy = b.busy_time_us - a.busy_time_us
        rwnd = b.rwnd_limited_us - a.rwnd_limited_us
        sndbuf = b.sndbuf_limited_us - a.sndbuf_limited_us
    if busy <= 0:
        return Limits(0, 0.0, 0.0, 0.0, window)
    r, s = min(1.0, rwnd / busy), min(1.0, sndbuf / busy)
    return Limits(busy, round(r, 3), round(s, 3), round(max(0.0, 1.0 - r - s), 3), window)


def report(
    samples: Sequence[TcpConn],
    rmem_max: int | None = None,
    wmem_max: int | None = None,
    times: Sequence[float] | None = None,
) -> BdpReport:
    """One socket's samples (oldest first) -> its BDP figures. `times` (monotonic seconds, one
    per sample) let the bandwidth be checked against the sustained rate; without them the
    samples are taken as they are (`bw_checked` False)."""
    if not samples:
        raise ValueError("no samples")
    if times is not None and len(times) != len(samples):
        raise ValueError("one time per sample")
    last = samples[-1]
    i = last.info
    infos = [s.info for s in samples if s.info is not None]
    app_limited = sum(1 for x in infos if x.delivery_rate_app_limited)
    bw = bwfilter.estimate(
        [
            bwfilter.Point(
                times[k] if times is not None else 0.0,
                s.info,
                s.bbr.bw_bps if s.bbr and s.bbr.bw_bps > 0 else None,
            )
            for k, s in enumerate(samples)
            if s.info is not None
        ]
    )
    bbr = last.bbr
    min_rtt = (i.min_rtt_us or None) if i else None
    if bbr and bbr.min_rtt_us and bbr.min_rtt_us != 0xFFFFFFFF:
        bbr_min: int | None = bbr.min_rtt_us
    else:
        bbr_min = None
    src = {
        "bbr": "bbr",
        "delivery_rate": "delivery_rate",
        "sustained": "sustained delivery (faster samples rejected as bursts)",
    }.get(bw.source, "none (all samples app-limited)")
    rtt = min_rtt or bbr_min
    bdp = int(bw.bps / 8 * rtt / 1e6) if bw.bps and rtt else None
    cwnd_bytes = i.snd_cwnd * i.snd_mss if i else None
    return BdpReport(
        sock_cookie=last.cookie,
        peer=last.peer,
        local=f"{last.laddr}:{last.lport}",
        state=last.state,
        cc=last.cc,
        min_rtt_us=min_rtt,
        srtt_us=i.rtt_us if i else None,
        delivery_rate_bps=bw.delivery_bps,
        app_limited_samples=app_limited,
        samples=len(samples),
        bbr_bw_bps=bw.bbr_raw_bps,
        bbr_min_rtt_us=bbr_min,
        bw_bps=bw.bps,
        bw_source=src,
        sustained_bps=bw.sustained_bps,
        bw_checked=bw.checked,
        rejected_samples=bw.rejected,
        bdp_bytes=bdp,
        snd_cwnd=i.snd_cwnd if i else None,
        snd_mss=i.snd_mss if i else None,
        cwnd_bytes=cwnd_bytes,
        cwnd_over_bdp=round(cwnd_bytes / bdp, 3) if cwnd_bytes and bdp else None,
        snd_wnd_bytes=i.snd_wnd if i else None,
        retrans=i.total_retrans if i else 0,
        limits=limits_of(samples[0], last),
        rmem_max_bytes=rmem_max,
        wmem_max_bytes=wmem_max,
    )
