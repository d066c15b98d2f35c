from __future__ import annotations

import socket

from netdiag.tune import verify


def m(bps: int, cc: str = "bbr") -> verify.Measurement:
    return verify.Measurement(
        peer="x:1",
        cc=cc,
        seconds=1,
        bytes_sent=bps // 8,
        throughput_bps=bps,
        rtt_us=100,
        min_rtt_us=90,
        retrans_segs=0,
        bytes_retrans=0,
        busy_us=1000,
        rwnd_limited_us=100,
        sndbuf_limited_us=0,
        cwnd_limited_us=900,
        delivery_rate_bps=bps,
    )


def test_verdicts() -> None:
    assert verify.judge(m(100), m(50)).verdict == "worse"
    assert verify.judge(m(100), m(102)).verdict == "same"
    assert verify.judge(m(100), m(200)).verdict == "better"
    # nothing moved before the change: no verdict is invented
    v = verify.judge(m(0), m(200))
    assert v.verdict == "unmeasured" and v.throughput_ratio == 0.0


def test_tcp_info_of_a_real_loopback_connection() -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    c = socket.create_connection(srv.getsockname())
    a, _ = srv.accept()
    c.sendall(b"x" * 100_000)
    a.recv(100_000)
    info = verify.tcp_info(c)
    assert info["bytes_sent"] >= 100_000 and info["rtt_us"] > 0
    for s in (a, c, srv):
        s.close()


def test_bdp_from_measurement() -> None:
    assert verify.bdp_from(m(100_000_000)) == 100_000_000 * 90 // 8 // 1_000_000
