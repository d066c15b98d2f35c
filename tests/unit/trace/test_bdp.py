"""BDP derivations and verdicts from tcp_info samples."""

from __future__ import annotations

import struct

import pytest

from netdiag.measure import bdp, rttprobe, sockdiag
from netdiag.measure.sockdiag import BbrInfo
from tests.unit.tcpkit import conn


def test_chrono_limits_are_window_deltas() -> None:
    # 10 Gbit/s x 5 ms = 6.25 MB BDP; 70 % of the window's busy time was rwnd-limited
    a = conn(busy_time_us=1_000_000, rwnd_limited_us=0)
    b = conn(busy_time_us=2_000_000, rwnd_limited_us=700_000)
    r = bdp.report([a, b], rmem_max=6_291_456)
    assert r.bdp_bytes == 6_250_000
    assert r.limits is not None and r.limits.rwnd == 0.7 and r.limits.window == "sample"
    one = bdp.report([b])
    assert one.limits is not None and one.limits.window == "lifetime" and one.limits.rwnd == 0.35


def test_app_limited_samples_are_excluded_from_the_rate() -> None:
    samples = [
        conn(delivery_rate_bps=50_000_000_000, delivery_rate_app_limited=True, busy_time_us=10),
        conn(delivery_rate_bps=8_000_000, busy_time_us=20),
    ]
    r = bdp.report(samples)
    assert r.delivery_rate_bps == 8_000_000 and r.app_limited_samples == 1
    only_app = bdp.report([conn(delivery_rate_app_limited=True, busy_time_us=5)])
    assert only_app.bw_bps is None and only_app.bdp_bytes is None


def test_bbr_estimates_win_when_bbr_runs() -> None:
    r = bdp.report(
        [
            conn(
                cc="bbr",
                bbr=BbrInfo(bw_bps=80_000_000, min_rtt_us=20_000, pacing_gain=1.0, cwnd_gain=2.0),
                min_rtt_us=20_000,
                busy_time_us=1,
            )
        ]
    )
    assert r.bw_source == "bbr" and r.bdp_bytes == 200_000


def test_tcp_info_decoding_units() -> None:
    raw = {
        "tcpi_rtt": 1000,
        "tcpi_min_rtt": 900,
        "tcpi_delivery_rate": 125,
        "tcpi_pacing_rate": 10,
        "tcpi_delivery_rate_app_limited": 1,
        "tcpi_ca_state": 4,
        "tcpi_busy_time": 7,
    }
    i = sockdiag.tcp_info_from(raw)
    assert i.rtt_us == 1000 and i.delivery_rate_bps == 1000 and i.pacing_rate_bps == 80
    assert i.delivery_rate_app_limited and i.ca_state == "Loss" and i.busy_time_us == 7
    b = sockdiag.bbr_info_from(
        {
            "bbr_bw_lo": 1,
            "bbr_bw_hi": 1,
            "bbr_min_rtt": 5,
            "bbr_pacing_gain": 512,
            "bbr_cwnd_gain": 256,
        }
    )
    assert b.bw_bps == ((1 << 32) + 1) * 8 and b.pacing_gain == 2.0 and b.cwnd_gain == 1.0
    assert sockdiag.addr_text("::ffff:10.0.0.1") == "10.0.0.1"


def test_skmem_decoding() -> None:
    raw = ":".join(f"{b:02x}" for b in struct.pack("=9I", 1, 2, 3, 4, 5, 6, 7, 8, 9))
    m = sockdiag.skmem_from(raw)
    assert m is not None and m.rmem_alloc == 1 and m.sndbuf == 4 and m.wmem_queued == 6
    assert m.drops == 9
    assert sockdiag.skmem_from("zz") is None and sockdiag.skmem_from(None) is None


def test_probe_target_parsing() -> None:
    assert rttprobe.parse_target("127.0.0.1:30303") == ("127.0.0.1", 30303)
    assert rttprobe.parse_target("[::1]:30303") == ("::1", 30303)
    from netdiag.errors import InputError

    for bad in ("127.0.0.1", ":80", "host:port", "::1:80", "[::1]:0", "10.0.0.1:abc"):
        with pytest.raises(InputError):
            rttprobe.parse_target(bad)
