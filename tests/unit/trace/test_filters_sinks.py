"""Filters, output sinks, fallback poller, and the CLI paths that need no privileges."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from netdiag.cli.main import main
from netdiag.cli.trace import NODE_COLUMNS, _columns, default_columns
from netdiag.errors import InputError
from netdiag.measure.sockdiag import TcpConn
from netdiag.trace import bpfstats, engine, fallback, manifest, sinks
from netdiag.trace.filters import Filters
from tests.unit.tcpkit import conn


def test_defines_put_two_ports_in_the_kernel_and_more_in_user_space() -> None:
    p = manifest.load("tcp_peers")
    assert engine.defines_for(p, Filters(ports=(80, 443)).kernel_ports(), False) == {
        "FILTER_PORT": 80,
        "FILTER_PORT2": 443,
    }
    many = Filters(ports=(1, 2, 3))
    assert many.kernel_ports() == ()
    assert many.keep({"lport": 9, "rport": 3}) and not many.keep({"lport": 9, "rport": 4})
    # pid / cgroup / netns are decided at read time: nothing of them reaches the kernel half
    assert engine.defines_for(p, (), True) == {}
    with pytest.raises(InputError):
        Filters(ports=(70000,))


def _snap(rows: list[dict[str, object]]) -> engine.Snapshot:
    return engine.Snapshot("tcp_peers", 1, 1.0, rows, {"lost_events": 0}, 100, 100.0, 0)


ROW = {
    "sock_cookie": 9,
    "peer": "203.0.113.255:65535",
    "state": "ESTABLISHED",
    "srtt_min_us": 51234,
    "srtt_us": 52345,
    "srtt_p90_us": 65536,
    "snd_cwnd": 1234,
    "ssthresh": 2147483647,
    "acked_bps": 9.87e9,
    "retrans": 123456,
    "recovery_ms": 123456.7,
    "age_s": 86400.0,
    "peer_id": "7f3a9c0123456789",
    "mesh": True,
    "verdict": "sndbuf-limited",
}


def test_default_table_fits_100_columns_without_truncation() -> None:
    p = manifest.load("tcp_peers")
    cong_cols = _columns(p, None, node=False, cong=True, listen=False)
    for cols in (default_columns(p), list(NODE_COLUMNS), cong_cols):
        con = Console(width=100, record=True)
        con.print(
            sinks.table(
                _snap([ROW]), cols, "t", "probe cost 40,000 runs/s × 300 ns = 1.2% of one CPU"
            )
        )
        text = con.export_text()
        assert all(len(line) <= 100 for line in text.splitlines())
        assert "…" not in text.splitlines()[2], text
        assert "203.0.113.255:65535" in text and "51.23" in text and "123456" in text
        assert ("inf" in text) == ("ssthresh" in cols)
        assert "sndbuf-limited" in text


def test_ndjson_line_is_one_object_with_rows() -> None:
    line = sinks.ndjson_line(_snap([ROW]), {"bpf_ns_per_event": 300.0})
    assert "\n" not in line
    obj = json.loads(line)
    assert obj["probe"] == "tcp_peers" and obj["rows"][0]["sock_cookie"] == 9
    assert obj["bpf_ns_per_event"] == 300.0 and obj["lost_events"] == 0


def test_sort_puts_none_last() -> None:
    rows = [{"a": None}, {"a": 3}, {"a": 10}]
    assert [r["a"] for r in sinks.sort_rows(rows, "a")] == [10, 3, None]


def test_fallback_poller_shapes_rows_like_the_probe() -> None:
    p = manifest.load("tcp_peers")
    conns: list[TcpConn] = [conn(cookie=5, bytes_acked=1000)]
    clock = iter([0, 1_000_000_000, 2_000_000_000])
    poller = fallback.Poller(
        p, (), None, snapshot=lambda *_a, **_k: conns, clock=lambda: next(clock)
    )
    s1 = poller.read()  # no baseline (open() not called): a lifetime total is not a rate
    assert s1.source == "sock_diag" and fallback.NOTE in s1.notes
    assert s1.rows[0]["acked_bps"] is None
    r = s1.rows[0]
    assert (
        r["sock_cookie"] == 5
        and r["min_rtt_us"] == 5000
        and r["srtt_min_us"] is None
        and r["peer"] == "198.51.100.7:30303"
    )
    conns[:] = [conn(cookie=5, bytes_acked=3000)]
    assert poller.read().rows[0]["acked_bps"] == 2000 * 8


def test_fdinfo_parsing() -> None:
    text = "pos:\t0\nflags:\t02000002\nprog_type:\t5\nrun_time_ns:\t12345\nrun_cnt:\t10\n"
    assert bpfstats.parse_fdinfo(text) == bpfstats.ProgStats(12345, 10)


def test_cli_ebpf_prints_final_c_with_defines(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trace-peers", "--ebpf", "--port", "80,443"]) == 0
    out = capsys.readouterr().out
    assert "#define FILTER_PORT 80" in out and "#define FILTER_PORT2 443" in out
    assert "TRACEPOINT_PROBE(tcp, tcp_probe)" in out


def test_cli_probes_json_lists_catalog(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["probes", "--json"]) == 0
    items = {p["name"]: p for p in json.loads(capsys.readouterr().out)["probes"]}
    assert set(items) >= {"tcp_peers", "tcp_cong", "tcp_drops"}
    assert "tcp:tcp_probe" in items["tcp_peers"]["hooks"]
    assert isinstance(items["tcp_drops"]["available"], bool)
    assert any(f["unit"] == "us" for f in items["tcp_peers"]["fields"])


def test_cli_rejects_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trace-peers", "--port", "http"]) == 2
    assert "netdiag: error: --port 'http' is not a number" in capsys.readouterr().err
    assert main(["probes", "run", "tcp_drops", "--port", "80"]) == 2
    assert main(["trace-peers", "--interval", "0"]) == 2


def test_trace_peers_falls_back_to_sock_diag_and_says_why(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from netdiag.errors import PrivilegeError

    def no_bpf(self: engine.Session) -> engine.Session:
        raise PrivilegeError("loading eBPF programs needs CAP_BPF, CAP_PERFMON", "run as root")

    monkeypatch.setattr(engine.Session, "open", no_bpf)
    assert main(["trace-peers", "--json", "--count", "1", "--interval", "0.1"]) == 0
    cap = capsys.readouterr()
    assert "eBPF unavailable (loading eBPF programs needs CAP_BPF" in cap.err
    assert "falling back to sock_diag polling" in cap.err
    obj = json.loads(cap.out.splitlines()[-1])
    assert obj["source"] == "sock_diag" and obj["notes"] == [fallback.NOTE]


def test_sort_reverse_keeps_missing_last_and_keys_drive_the_view() -> None:
    from netdiag.cli.trace import View

    rows = [{"a": None}, {"a": 3}, {"a": 10}]
    assert [r["a"] for r in sinks.sort_rows(rows, "a", reverse=False)] == [3, 10, None]
    v = View(["peer", "srtt_us"], "acked_bps")
    assert v.key("2") is None and v.sort_by == "srtt_us"
    v.key("r")
    assert v.reverse is False
    v.key("9")  # no 9th column: unchanged
    assert v.sort_by == "srtt_us"
    assert v.key("q") == "quit"


def test_cli_rejects_unknown_columns(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trace-peers", "--sort", "nope", "--count", "1"]) == 2
    err = capsys.readouterr().err
    assert "unknown column 'nope'" in err and "srtt_p90_us" in err
    assert main(["trace-peers", "--columns", "peer,bogus", "--count", "1"]) == 2
