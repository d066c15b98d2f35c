"""Map entries -> typed rows: addresses, enums from tracefs text, histograms, rates."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from netdiag.trace import manifest, symbols
from netdiag.trace.decode import Decoder, addr_text, apply_rates, hist_percentile

KFREE_FMT = (
    'print fmt: "skbaddr=%p reason: %s", REC->skbaddr, __print_symbolic(REC->reason, '
    '{ 2, "NOT_SPECIFIED" }, { 3, "NO_SOCKET" }, { 4, "SOCKET_CLOSE" }, { 128, "MAX" })'
)
STATE_FMT = (
    'print fmt: "oldstate=%s newstate=%s", '
    '__print_symbolic(REC->oldstate, { 1, "TCP_ESTABLISHED" }), '
    '__print_symbolic(REC->newstate, { 1, "TCP_ESTABLISHED" }, { 7, "TCP_CLOSE" }, '
    '{ TCP_LISTEN, "TCP_LISTEN" })'
)


def test_parse_symbolic_reads_names_from_the_format() -> None:
    assert symbols.parse_symbolic(KFREE_FMT, "reason") == {
        2: "NOT_SPECIFIED",
        3: "NO_SOCKET",
        4: "SOCKET_CLOSE",
        128: "MAX",
    }
    # the right __print_symbolic is chosen, symbolic keys are skipped
    assert symbols.parse_symbolic(STATE_FMT, "newstate") == {1: "TCP_ESTABLISHED", 7: "TCP_CLOSE"}
    assert symbols.parse_symbolic(STATE_FMT, "nothere") == {}


def test_hist_percentile_uses_bcc_log2_buckets() -> None:
    # bcc: bucket k holds [2^(k-1), 2^k); all samples in bucket 10 -> within [512, 1024)
    b = [0] * 27
    b[10] = 100
    assert 512 <= hist_percentile(b, 0.5) <= 1024  # type: ignore[operator]
    assert hist_percentile(b, 0.5) == pytest.approx(768)
    b2 = [0] * 27
    b2[5], b2[12] = 90, 10
    assert hist_percentile(b2, 0.5) < 32  # type: ignore[operator]
    assert hist_percentile(b2, 0.99) > 2048  # type: ignore[operator]
    assert hist_percentile([0] * 27, 0.5) is None


def test_addr_text_v4_v6_and_mapped() -> None:
    assert addr_text([127, 0, 0, 1] + [0] * 12, 2) == "127.0.0.1"
    mapped = [0] * 10 + [0xFF, 0xFF, 10, 1, 2, 3]
    assert addr_text(mapped, 10) == "10.1.2.3"
    assert addr_text([0] * 15 + [1], 10) == "::1"


def _peer_leaf(**kw: object) -> SimpleNamespace:
    hist = [0] * 27
    hist[11] = 4  # srtt in [1024, 2048) us
    base = dict(
        cookie=42,
        first_ns=1_000_000_000,
        last_ns=2_000_000_000,
        open_ns=500_000_000,
        closed_ns=0,
        events=4,
        samples=4,
        srtt_sum_us=6000,
        bytes_acked=1_000_000,
        retrans=3,
        open_pid=0,
        open_cgroup=0,
        srtt_min_us=1200,
        srtt_max_us=1800,
        srtt_last_us=1500,
        snd_cwnd=10,
        ssthresh=2147483647,
        snd_wnd=65535,
        rcv_wnd=65535,
        state=1,
        family=2,
        sport=5000,
        dport=30303,
        saddr=[127, 0, 0, 1] + [0] * 12,
        daddr=[127, 0, 0, 2] + [0] * 12,
        hist=hist,
    )
    base.update(kw)
    return SimpleNamespace(**base)


def _decoder() -> Decoder:
    p = manifest.load("tcp_peers")
    return Decoder(p, {"state": {1: "ESTABLISHED", 7: "CLOSE"}})


def test_tcp_peers_row_has_units_and_derived_columns() -> None:
    d = _decoder()
    row = d.row(SimpleNamespace(value=42), _peer_leaf(), now_ns=3_000_000_000)
    assert row["sock_cookie"] == 42
    assert row["peer"] == "127.0.0.2:30303" and row["laddr"] == "127.0.0.1"
    assert row["state"] == "ESTABLISHED"
    assert row["srtt_min_us"] == 1200 and row["srtt_us"] == 1500
    assert row["srtt_mean_us"] == 1500
    assert 1024 <= row["srtt_p50_us"] < 2048
    assert row["age_s"] == pytest.approx(2.5)  # from open_ns to now
    assert row["retrans"] == 3


def test_sampled_rows_take_the_mean_over_the_samples_not_every_event() -> None:
    """--sample-ms: srtt_sum_us holds the sampled srtt only; events count every ACK."""
    d = _decoder()
    row = d.row(SimpleNamespace(value=42), _peer_leaf(events=400, samples=4), now_ns=3_000_000_000)
    assert row["events"] == 400 and row["srtt_mean_us"] == 1500


def test_missing_sentinel_becomes_none_and_closed_age_stops() -> None:
    d = _decoder()
    row = d.row(
        SimpleNamespace(value=1),
        _peer_leaf(srtt_min_us=0xFFFFFFFF, closed_ns=1_500_000_000, state=7),
        now_ns=9_000_000_000,
    )
    assert row["srtt_min_us"] is None
    assert row["state"] == "CLOSE"
    assert row["age_s"] == pytest.approx(1.0)


def test_rates_are_deltas_over_the_interval() -> None:
    p = manifest.load("tcp_peers")
    prev = {42: {"sock_cookie": 42, "bytes_acked": 1_000_000, "events": 10}}
    rows = [
        {"sock_cookie": 42, "bytes_acked": 1_500_000, "events": 110},
        {"sock_cookie": 7, "bytes_acked": 100, "events": 1},
    ]
    apply_rates(p, rows, prev, 0.5, lambda r: r["sock_cookie"])
    assert rows[0]["acked_bps"] == 500_000 * 8 / 0.5
    assert rows[0]["events_per_s"] == 200
    assert rows[1]["acked_bps"] == 1600  # new socket: all of it happened in this interval


def test_cong_time_includes_the_running_state() -> None:
    p = manifest.load("tcp_cong")
    d = Decoder(p, symbols.resolve_enums(p.enums))
    leaf = SimpleNamespace(
        skaddr=1,
        first_ns=0,
        since_ns=2_000_000,
        closed_ns=0,
        time_ns=[1_000_000, 0, 0, 5_000_000, 0],
        enters=[1, 0, 0, 2, 0],
        ca_state=3,
        family=2,
        sport=1,
        dport=2,
        saddr=[0] * 16,
        daddr=[0] * 16,
    )
    row = d.row(SimpleNamespace(value=1), leaf, now_ns=4_000_000)
    assert row["ca_state"] == "Recovery"
    assert row["time_ms"]["Recovery"] == pytest.approx(7.0)  # 5 ms done + 2 ms running
    assert row["time_ms"]["Open"] == pytest.approx(1.0)
    assert row["enters"]["Recovery"] == 2


def test_drops_row_names_reason_from_tracefs_and_symbolizes_location() -> None:
    p = manifest.load("tcp_drops")
    enums = {
        "reason": symbols.parse_symbolic(KFREE_FMT, "reason"),
        "protocol": {int(k): v for k, v in p.enums["protocol"].items()},
    }
    d = Decoder(p, enums, ksym=lambda a: "tcp_v4_rcv" if a == 0xFFFF1234 else "?")
    key = SimpleNamespace(location=0xFFFF1234, reason=3, protocol=0x0800, has_sk=0)
    row = d.row(key, SimpleNamespace(count=5, last_ns=1), now_ns=2)
    assert row == {
        "reason": "NO_SOCKET",
        "protocol": "IPv4",
        "location": "tcp_v4_rcv",
        "socket": 0,
        "count": 5,
        "last_ns": 1,
    }
    assert d.key_of(row) == ("NO_SOCKET", "tcp_v4_rcv", "IPv4", 0)


def test_cong_rows_join_peers_by_four_tuple() -> None:
    from netdiag.trace import enrich

    peers = [
        {"laddr": "10.0.0.1", "lport": 5, "raddr": "10.0.0.2", "rport": 7, "sock_cookie": 1},
        {"laddr": "10.0.0.1", "lport": 6, "raddr": "10.0.0.2", "rport": 7, "sock_cookie": 2},
    ]
    cong = [
        {
            "laddr": "10.0.0.1",
            "lport": 5,
            "raddr": "10.0.0.2",
            "rport": 7,
            "ca_state": "Open",
            "time_ms": {"Open": 90.0, "Recovery": 12.345, "Loss": 3.0},
            "enters": {"Recovery": 4, "Loss": 1},
        }
    ]
    assert enrich.join_cong(peers, cong) == 1
    assert peers[0]["recovery_ms"] == 12.3 and peers[0]["loss_ms"] == 3.0
    assert peers[0]["recoveries"] == 5 and peers[0]["ca_state"] == "Open"
    assert "recovery_ms" not in peers[1]
