"""Synthetic tcp_info sequences for the engine's unit tests (recorded lab fixtures live in
fixtures/; these cover edges a lab run does not pin down)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from netdiag.diagnose.window import Sample
from netdiag.measure.sockdiag import BbrInfo, SkMem, TcpConn, TcpInfo

BASE = TcpInfo(
    ca_state="Open",
    retransmits=0,
    rto_us=250000,
    snd_mss=1448,
    rcv_mss=1448,
    unacked=0,
    lost=0,
    rtt_us=50000,
    rttvar_us=500,
    min_rtt_us=50000,
    snd_ssthresh=2147483647,
    snd_cwnd=10,
    total_retrans=0,
    pacing_rate_bps=0,
    delivery_rate_bps=0,
    delivery_rate_app_limited=False,
    busy_time_us=0,
    rwnd_limited_us=0,
    sndbuf_limited_us=0,
    bytes_acked=0,
    bytes_received=0,
    bytes_sent=0,
    bytes_retrans=0,
    snd_wnd=1_000_000,
    rcv_space=14480,
    segs_out=0,
    notsent_bytes=0,
)


def conn(
    info: TcpInfo | None,
    *,
    cc: str = "cubic",
    bbr: BbrInfo | None = None,
    skmem: SkMem | None = None,
    state: str = "ESTABLISHED",
    lport: int = 41000,
    rport: int = 5201,
    rqueue: int = 0,
    wqueue: int = 0,
    cookie: int = 7,
) -> TcpConn:
    return TcpConn(
        cookie=cookie,
        family=2,
        state=state,
        laddr="10.0.0.1",
        lport=lport,
        raddr="10.0.0.2",
        rport=rport,
        inode=1,
        uid=0,
        cgroup_id=None,
        cc=cc,
        info=info,
        bbr=bbr,
        rqueue=rqueue,
        wqueue=wqueue,
        skmem=skmem,
    )


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
