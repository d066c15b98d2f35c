"""The one sock_diag fixture of the unit tests: a TcpInfo with every field set and a TcpConn
around it (bdp, diagnose and trace tests replace only the fields they are about)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from netdiag.measure.sockdiag import BbrInfo, SkMem, TcpConn, TcpInfo

INFO = TcpInfo(  # 10 Gbit/s over a 5 ms path, nothing sent yet
    ca_state="Open",
    retransmits=0,
    rto_us=204000,
    snd_mss=1448,
    rcv_mss=1448,
    unacked=0,
    lost=0,
    rtt_us=5500,
    rttvar_us=100,
    min_rtt_us=5000,
    snd_ssthresh=2147483647,
    snd_cwnd=100,
    total_retrans=0,
    pacing_rate_bps=0,
    delivery_rate_bps=10_000_000_000,
    delivery_rate_app_limited=False,
    busy_time_us=0,
    rwnd_limited_us=0,
    sndbuf_limited_us=0,
    bytes_acked=0,
    bytes_received=0,
    bytes_sent=0,
    bytes_retrans=0,
    snd_wnd=0,
    rcv_space=0,
    segs_out=0,
    notsent_bytes=0,
)


def conn(
    info: TcpInfo | None = INFO,
    *,
    cookie: int = 1,
    inode: int = 0,
    state: str = "ESTABLISHED",
    laddr: str = "127.0.0.1",
    lport: int = 40000,
    raddr: str = "198.51.100.7",
    rport: int = 30303,
    cgroup_id: int | None = None,
    cc: str = "cubic",
    bbr: BbrInfo | None = None,
    skmem: SkMem | None = None,
    rqueue: int = 0,
    wqueue: int = 0,
    **info_fields: Any,
) -> TcpConn:
    """An IPv4 connection; `info_fields` replace fields of `info`."""
    if info_fields:
        assert info is not None, "tcp_info fields given for a connection without tcp_info"
        info = replace(info, **info_fields)
    return TcpConn(
        cookie=cookie,
        family=2,
        state=state,
        laddr=laddr,
        lport=lport,
        raddr=raddr,
        rport=rport,
        inode=inode,
        uid=0,
        cgroup_id=cgroup_id,
        cc=cc,
        info=info,
        bbr=bbr,
        rqueue=rqueue,
        wqueue=wqueue,
        skmem=skmem,
    )
