"""The decision order on synthetic windows: each verdict's deciding evidence, and the
mistakes the old `bdp` verdict made (issue 11's table) not made again."""

from __future__ import annotations

from netdiag.diagnose import REAL_LIMITS, Context, build_window, judge, judge_samples
from netdiag.measure.sockdiag import SkMem

from .synth import series


def test_idle_socket_is_idle_not_path_full() -> None:
    f = judge_samples(series(rate_bps=0, busy=0.0))
    assert f.verdict == "idle"
    assert f.severity == "info"


def test_low_busy_share_is_app_limited() -> None:
    # iperf3 -b 2M on a 50 Mbit/s link: data queued ~21 % of the time
    f = judge_samples(series(rate_bps=2e6, busy=0.21, unacked=3, snd_cwnd=40))
    assert f.verdict == "app-limited"
    assert f.evidence["busy_pct"] == 21.0


def test_sndbuf_limit_beats_app_limited_flags() -> None:
    # a small send buffer empties between ACKs: the kernel marks samples app-limited, but the
    # sndbuf chrono says the buffer, not the application, held the sender
    s = series(rate_bps=9.2e6, busy=1.0, sndbuf=0.63, delivery_rate_app_limited=True, unacked=20)
    f = judge_samples(s)
    assert f.verdict == "sndbuf-limited"
    assert "tcp_wmem" in (f.fix or "")


def test_rwnd_fix_uses_path_bottleneck_not_own_rate() -> None:
    # receiver rmem 64 kB at 50 ms: the flow delivers ~5.9 Mbit/s; the path is 50 Mbit/s
    s = series(rate_bps=5.9e6, rwnd=0.9, snd_wnd=32768, unacked=22, snd_cwnd=80)
    w = build_window(s)
    own = judge(w, Context())
    told = judge(w, Context(rate_bps=50_000_000))
    assert own.verdict == told.verdict == "rwnd-limited"
    assert own.evidence["bottleneck_source"] == "own delivery rate"
    assert "lower bound" in (own.fix or "")
    # 2 × 50 Mbit/s × 50 ms = 625 kB
    assert told.evidence["bdp_bytes"] == 312_500
    assert "625.0 kB" in (told.fix or "")


def test_rwnd_fix_takes_a_faster_peer_connection_as_bottleneck() -> None:
    w = build_window(series(rate_bps=5.9e6, rwnd=0.9, snd_wnd=32768))
    f = judge(w, Context(peer_rates={"10.0.0.2": 48_000_000}))
    assert f.evidence["bottleneck_source"] == "peer connections"
    assert f.evidence["bottleneck_bps"] == 48_000_000


def test_zero_window_is_receiver_slow() -> None:
    f = judge_samples(series(rate_bps=4e6, rwnd=0.7, snd_wnd=0))
    assert f.verdict == "receiver-slow"


def test_random_loss_without_queue_is_loss_limited_with_tune_command() -> None:
    s = series(rate_bps=3.4e6, retrans_per_s=10, rtt_us=[40200, 40400, 40100], min_rtt_us=40000)
    f = judge_samples(s)
    assert f.verdict == "loss-limited"
    assert f.fix == "netdiag tune --cc bbr --port 5201"


def test_loss_with_a_queue_is_path_limited() -> None:
    rtts = [41000, 46000, 52000, 48000, 44000]
    s = series(
        rate_bps=48e6, retrans_per_s=5, rtt_us=rtts, min_rtt_us=40000, unacked=200, snd_cwnd=200
    )
    assert judge_samples(s).verdict == "path-limited"


def test_standing_queue_is_rtt_inflated() -> None:
    s = series(rate_bps=19e6, rtt_us=[150000, 160000, 170000], min_rtt_us=20000)
    f = judge_samples(s)
    assert f.verdict == "rtt-inflated"
    assert f.evidence["srtt_over_min_rtt"] == 8.0


def test_window_held_without_loss_or_queue_is_cwnd_limited() -> None:
    # route cwnd lock 10: in flight == cwnd, no loss, srtt at min RTT
    s = series(
        rate_bps=2.1e6,
        unacked=10,
        snd_cwnd=10,
        snd_ssthresh=10,
        min_rtt_us=50000,
        rtt_us=[50100, 50200],
    )
    f = judge(build_window(s), Context(route_cwnd_lock={"10.0.0.2": 10}))
    assert f.verdict == "cwnd-limited"
    assert "cwnd lock 10" in (f.fix or "")
    assert judge_samples(s).verdict == "cwnd-limited"  # also without the route hint


def test_bbr_pacing_below_cwnd_is_path_limited() -> None:
    # bbr 120 ms 20 Mbit/s: cwnd ≈ 2 × bbr's BDP, in flight ≈ 1 BDP
    bdp_pkts = int(20e6 / 8 * 0.12 / 1448)
    s = series(
        cc="bbr",
        rate_bps=18e6,
        bbr_bw=20_000_000,
        min_rtt_us=120000,
        rtt_us=[121000, 125000],
        snd_cwnd=2 * bdp_pkts,
        unacked=bdp_pkts,
    )
    assert judge_samples(s).verdict == "path-limited"


def test_bbr_with_cwnd_at_its_bdp_is_cwnd_limited() -> None:
    s = series(
        cc="bbr",
        rate_bps=2.3e6,
        bbr_bw=2_300_000,
        min_rtt_us=50000,
        rtt_us=[50100],
        snd_cwnd=10,
        unacked=10,
    )
    assert judge_samples(s).verdict == "cwnd-limited"


def test_receive_side_full_queue_is_receiver_slow() -> None:
    mem = SkMem(900_000, 1_000_000, 0, 87040, 0, 0, 0, 0, 0)
    s = series(rate_bps=0, busy=0.0, skmem=mem)
    s = [type(x)(x.t_s, x.conn) for x in s]
    # make it a receiver: bytes arrive
    from dataclasses import replace

    s = [
        type(x)(x.t_s, replace(x.conn, info=replace(x.conn.info, bytes_received=int(1e6 * x.t_s))))
        for x in s
        if x.conn.info is not None
    ]
    assert judge_samples(s).verdict == "receiver-slow"


def test_real_limits_never_called_path_limited_on_issue_table() -> None:
    cases = {
        "rwnd-limited": series(rate_bps=5.9e6, rwnd=0.9, snd_wnd=32768),
        "sndbuf-limited": series(rate_bps=9.2e6, sndbuf=0.63),
        "loss-limited": series(rate_bps=3.4e6, retrans_per_s=10, rtt_us=[40100], min_rtt_us=40000),
        "cwnd-limited": series(rate_bps=2.1e6, unacked=10, snd_cwnd=10, rtt_us=[50100]),
    }
    for want, s in cases.items():
        got = judge_samples(s).verdict
        assert got == want
        assert got in REAL_LIMITS


def _receiver(rate_bps: float, rcvbuf: int, min_rtt_us: int) -> list:  # type: ignore[type-arg]
    from dataclasses import replace

    mem = SkMem(0, rcvbuf, 0, 87040, 0, 0, 0, 0, 0)
    s = series(rate_bps=0, busy=0.0, skmem=mem, min_rtt_us=min_rtt_us)
    return [
        type(x)(
            x.t_s,
            replace(x.conn, info=replace(x.conn.info, bytes_received=int(rate_bps / 8 * x.t_s))),
        )
        for x in s
        if x.conn.info is not None
    ]


def test_receive_buffer_at_its_cap_is_rwnd_limited_only_when_the_window_is_used() -> None:
    # 64 kB cap, 50 ms: a ~32-58 kB window carries ~5-9 Mbit/s; 6 Mbit/s arrive -> the cap binds
    used = build_window(_receiver(6e6, 65536, 50_000))
    assert judge(used, Context(rmem_max=65536)).verdict == "rwnd-limited"
    # 32 MB cap on loopback (10 µs): 10 Gbit/s is far below what that window allows
    roomy = build_window(_receiver(10e9, 33_554_432, 10))
    assert judge(roomy, Context(rmem_max=33_554_432)).verdict != "rwnd-limited"
