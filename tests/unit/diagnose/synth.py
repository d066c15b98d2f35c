"""Synthetic tcp_info sequences for the engine's unit tests (recorded lab fixtures live in
fixtures/; these cover edges a lab run does not pin down)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from netdiag.diagnose.window import Sample
from netdiag.measure.sockdiag import BbrInfo, SkMem, TcpConn, TcpInfo
from tests.unit import tcpkit
from tests.unit.tcpkit import INFO

# a 50 ms path, cwnd 10, nothing sent yet
BASE = replace(
    INFO,
    rto_us=250000,
    rtt_us=50000,
    rttvar_us=500,
    min_rtt_us=50000,
    snd_cwnd=10,
    delivery_rate_bps=0,
    snd_wnd=1_000_000,
    rcv_space=14480,
)


# the events tests join on this 4-tuple
FLOW: dict[str, Any] = {"laddr": "10.0.0.1", "lport": 41000, "raddr": "10.0.0.2", "rport": 5201}


def conn(info: TcpInfo | None, **kw: Any) -> TcpConn:
    """The flow FLOW (cookie 7) with `info`; `kw` as tcpkit.conn takes them."""
    return tcpkit.conn(info, **(FLOW | {"cookie": 7, "inode": 1} | kw))


def series(
    n: int = 11,
    dt: float = 0.2,
    *,
    cc: str = "cubic",
    rate_bps: float = 0.0,
    busy: float = 1.0,
    rwnd: float = 0.0,
    sndbuf: float = 0.0,
    retrans_per_s: float = 0.0,
    rtt_us: list[int] | None = None,
    bbr_bw: int | None = None,
    skmem: SkMem | None = None,
    **gauges: Any,
) -> list[Sample]:
    """n samples dt apart of a flow sending at rate_bps with the given chrono shares."""
    out = []
    for k in range(n):
        t = k * dt
        acked = int(rate_bps / 8 * t)
        info = replace(
            BASE,
            busy_time_us=int(busy * t * 1e6),
            rwnd_limited_us=int(rwnd * busy * t * 1e6),
            sndbuf_limited_us=int(sndbuf * busy * t * 1e6),
            bytes_acked=acked,
            bytes_sent=acked + int(retrans_per_s * t) * 1448,
            bytes_retrans=int(retrans_per_s * t) * 1448,
            total_retrans=int(retrans_per_s * t),
            delivery_rate_bps=int(rate_bps),
            rtt_us=(rtt_us[k % len(rtt_us)] if rtt_us else BASE.rtt_us),
            **gauges,
        )
        bbr = BbrInfo(bbr_bw, 50000, 1.0, 2.0) if bbr_bw else None
        out.append(Sample(t, conn(info, cc=cc, bbr=bbr, skmem=skmem)))
    return out
