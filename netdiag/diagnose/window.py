"""One connection over a window: tcp_info/bbr_info/skmem samples -> deltas and statistics.

Counters (busy/rwnd/sndbuf chrono times, bytes, retransmits) are judged as deltas between the
window's first and last sample; gauges (srtt, cwnd, snd_wnd, queues) as their distribution
over the samples. A snapshot alone judges the connection's lifetime, which is why the old
`bdp` verdict called an idle socket "the path itself is full".
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from netdiag.measure import bwfilter
from netdiag.measure.sockdiag import TcpConn, TcpInfo


@dataclass(frozen=True)
class Sample:
    """One sock_diag observation of a socket at monotonic time t_s."""

    t_s: float
    conn: TcpConn


@dataclass(frozen=True)
class ConnWindow:
    """What one socket did during the window (deltas) and how its gauges were distributed."""

    cookie: int
    peer: str
    raddr: str
    local: str
    lport: int
    rport: int
    state: str
    cc: str | None
    samples: int
    elapsed_us: int
    # chrono counters (deltas over the window, µs); busy includes rwnd and sndbuf time
    busy_us: int
    rwnd_limited_us: int
    sndbuf_limited_us: int
    # bytes and segments (deltas)
    acked_bytes: int
    received_bytes: int
    sent_bytes: int
    retrans_bytes: int
    retrans_segs: int
    rcv_ooo_pkts: int  # out-of-order packets this socket received (receive side's loss hint)
    # gauges
    mss: int
    min_rtt_us: int | None
    srtt_p10_us: int | None
    srtt_median_us: int | None
    srtt_max_us: int | None
    cwnd_first: int
    cwnd_last: int
    cwnd_max: int
    cwnd_min: int
    ssthresh_last: int
    unacked_median: int
    cwnd_bound_share: float  # samples with packets in flight ≥ cwnd - 1 (sending on cwnd)
    snd_wnd_min: int
    snd_wnd_max: int
    snd_wnd_last: int
    small_wnd_share: float  # samples where the peer's window was under 2 × mss
    wnd_shrink_share: float  # sample pairs where the peer's window shrank
    zero_window_probes: int  # the most unanswered zero-window probes seen
    notsent_max: int
    notsent_empty_share: float  # samples with less than one mss not yet sent
    lost_max: int
    reordering_last: int
    ca_states: tuple[str, ...]  # distinct, in order of appearance
    # largest delivery-rate sample not marked app-limited and not above the burst cap
    delivery_max_bps: int | None
    delivery_last_bps: int
    app_limited_share: float  # samples whose delivery-rate sample was app-limited
    pacing_rate_bps: int
    bbr_bw_bps: int | None  # bbr's latest bw that passed the burst check, else the estimate
    bbr_min_rtt_us: int | None
    # socket memory (skmem), when the kernel reported it
    sndbuf_bytes: int | None
    rcvbuf_bytes: int | None
    wmem_full_share: float  # samples with write queue ≥ 90 % of sndbuf
    rqueue_full_share: float  # samples with unread receive queue ≥ 50 % of rcvbuf
    rqueue_max: int
    socket_drops: int  # skmem drops delta
    # the burst check (measure/bwfilter): what the path sustained over spans of many RTTs
    bw: bwfilter.BwEstimate | None = None

    @property
    def elapsed_s(self) -> float:
        return self.elapsed_us / 1e6

    @property
    def busy_share(self) -> float:
        return min(1.0, self.busy_us / self.elapsed_us) if self.elapsed_us > 0 else 0.0

    @property
    def rwnd_share(self) -> float:
        return min(1.0, self.rwnd_limited_us / self.busy_us) if self.busy_us > 0 else 0.0

    @property
    def sndbuf_share(self) -> float:
        return min(1.0, self.sndbuf_limited_us / self.busy_us) if self.busy_us > 0 else 0.0

    @property
    def send_rate_bps(self) -> float:
        return self.acked_bytes * 8 / self.elapsed_s if self.elapsed_us > 0 else 0.0

    @property
    def recv_rate_bps(self) -> float:
        return self.received_bytes * 8 / self.elapsed_s if self.elapsed_us > 0 else 0.0

    @property
    def loss_rate(self) -> float:
        """Retransmitted share of bytes sent in the window."""
        return self.retrans_bytes / self.sent_bytes if self.sent_bytes > 0 else 0.0

    @property
    def cwnd_bytes(self) -> int:
        return self.cwnd_last * self.mss


def _share(flags: Sequence[bool]) -> float:
    return sum(flags) / len(flags) if flags else 0.0


def _pct(values: Sequence[int], q: float) -> int | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]


def build(samples: Sequence[Sample]) -> ConnWindow:
    """Samples of one socket, oldest first (at least one) -> its window."""
    if not samples:
        raise ValueError("no samples")
    first, last = samples[0].conn, samples[-1].conn
    infos: list[TcpInfo] = [s.conn.info for s in samples if s.conn.info is not None]
    a = first.info
    b = last.info
    elapsed_us = int((samples[-1].t_s - samples[0].t_s) * 1e6)

    def delta(name: str) -> int:
        if a is None or b is None:
            return 0
        return max(0, int(getattr(b, name)) - int(getattr(a, name)))

    mss = max((i.snd_mss for i in infos), default=0) or 1448
    rtts = [i.rtt_us for i in infos if i.rtt_us > 0]
    min_rtts = [i.min_rtt_us for i in infos if 0 < i.min_rtt_us < 0xFFFFFFFF]
    wnds = [i.snd_wnd for i in infos]
    bw = bwfilter.estimate(
        [
            bwfilter.Point(
                s.t_s, s.conn.info, s.conn.bbr.bw_bps if s.conn.bbr and s.conn.bbr.bw_bps else None
            )
            for s in samples
            if s.conn.info is not None
        ]
    )
    ca: list[str] = []
    for i in infos:
        if i.ca_state not in ca:
            ca.append(i.ca_state)
    mems = [s.conn.skmem for s in samples if s.conn.skmem is not None]
    bbr = last.bbr
    bbr_min = bbr.min_rtt_us if bbr and 0 < bbr.min_rtt_us < 0xFFFFFFFF else None
    first_mem, last_mem = (mems[0], mems[-1]) if mems else (None, None)
    return ConnWindow(
        cookie=last.cookie,
        peer=last.peer,
        raddr=last.raddr,
        local=f"{last.laddr}:{last.lport}",
        lport=last.lport,
        rport=last.rport,
        state=last.state,
        cc=last.cc,
        samples=len(samples),
        elapsed_us=elapsed_us,
        busy_us=delta("busy_time_us"),
        rwnd_limited_us=delta("rwnd_limited_us"),
        sndbuf_limited_us=delta("sndbuf_limited_us"),
        acked_bytes=delta("bytes_acked"),
        received_bytes=delta("bytes_received"),
        sent_bytes=delta("bytes_sent"),
        retrans_bytes=delta("bytes_retrans"),
        retrans_segs=delta("total_retrans"),
        rcv_ooo_pkts=delta("rcv_ooopack"),
        mss=mss,
        min_rtt_us=min(min_rtts) if min_rtts else (bbr_min or None),
        srtt_p10_us=_pct(rtts, 0.1),
        srtt_median_us=int(statistics.median(rtts)) if rtts else None,
        srtt_max_us=max(rtts) if rtts else None,
        cwnd_first=infos[0].snd_cwnd if infos else 0,
        cwnd_last=infos[-1].snd_cwnd if infos else 0,
        cwnd_max=max((i.snd_cwnd for i in infos), default=0),
        cwnd_min=min((i.snd_cwnd for i in infos), default=0),
        ssthresh_last=infos[-1].snd_ssthresh if infos else 0,
        unacked_median=int(statistics.median([i.unacked for i in infos])) if infos else 0,
        cwnd_bound_share=_share([i.unacked >= max(1, i.snd_cwnd - 1) for i in infos]),
        snd_wnd_min=min(wnds) if wnds else 0,
        snd_wnd_max=max(wnds) if wnds else 0,
        snd_wnd_last=wnds[-1] if wnds else 0,
        small_wnd_share=_share([w < 2 * mss for w in wnds]),
        wnd_shrink_share=_share([b < a for a, b in itertools.pairwise(wnds)]),
        zero_window_probes=max((i.probes for i in infos), default=0),
        notsent_max=max((i.notsent_bytes for i in infos), default=0),
        notsent_empty_share=_share([i.notsent_bytes < mss for i in infos]),
        lost_max=max((i.lost for i in infos), default=0),
        reordering_last=infos[-1].reordering if infos else 0,
        ca_states=tuple(ca),
        delivery_max_bps=bw.delivery_bps,
        delivery_last_bps=infos[-1].delivery_rate_bps if infos else 0,
        app_limited_share=_share([i.delivery_rate_app_limited for i in infos]),
        pacing_rate_bps=infos[-1].pacing_rate_bps if infos else 0,
        bbr_bw_bps=(bw.bbr_bps or bw.bps) if bw.bbr_raw_bps else None,
        bbr_min_rtt_us=bbr_min,
        sndbuf_bytes=last_mem.sndbuf if last_mem else None,
        rcvbuf_bytes=last_mem.rcvbuf if last_mem else None,
        wmem_full_share=_share([m.sndbuf > 0 and m.wmem_queued >= 0.9 * m.sndbuf for m in mems]),
        rqueue_full_share=_share([m.rcvbuf > 0 and m.rmem_alloc >= 0.5 * m.rcvbuf for m in mems]),
        rqueue_max=max((s.conn.rqueue for s in samples), default=0),
        socket_drops=(last_mem.drops - first_mem.drops) if last_mem and first_mem else 0,
        bw=bw,
    )
