"""Listener, host and input handling of the verdict engine (no root: fake samples/counters)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from netdiag.cli.main import main
from netdiag.diagnose import Sample
from netdiag.diagnose.collect import Collected, parse_peer
from netdiag.diagnose.host import HostFacts, judge_host
from netdiag.diagnose.run import judge_collected
from netdiag.errors import InputError

from .synth import conn, series


def _listener(depth: int, backlog: int) -> list[Sample]:
    return [
        Sample(
            t * 0.2, conn(None, state="LISTEN", lport=5301, rport=0, rqueue=depth, wqueue=backlog)
        )
        for t in range(6)
    ]


def test_full_accept_queue_with_overflows_is_an_error() -> None:
    col = Collected(
        listeners={1: _listener(3, 2)},
        counters_before={"TcpExt.ListenOverflows": 10},
        counters_after={"TcpExt.ListenOverflows": 71},
    )
    facts = HostFacts(listen_overflows=col.counter_delta("TcpExt.ListenOverflows"), somaxconn=4096)
    findings, _ = judge_collected(col, facts)
    top = findings[0]
    assert top.verdict == "accept-queue-overflow" and top.severity == "error"
    assert top.scope == "listener" and top.evidence["listen_overflows_delta"] == 61


def test_a_roomy_accept_queue_is_no_finding() -> None:
    findings, _ = judge_collected(Collected(listeners={1: _listener(1, 128)}), HostFacts())
    assert findings == []


def test_overflows_between_samples_still_reported_as_host_finding() -> None:
    findings = judge_host(HostFacts(listen_overflows=5), [], [])
    assert [f.verdict for f in findings] == ["accept-queue-overflow"]


def test_host_findings_cc_and_buffers_against_peers() -> None:
    col = Collected(
        conns={
            7: series(rate_bps=3.4e6, retrans_per_s=10, rtt_us=[40100], min_rtt_us=40000),
        }
    )
    facts = HostFacts(cc="cubic", rmem_max=65536, wmem_max=4194304)
    findings, _ = judge_collected(col, facts, rate_bps=50_000_000)
    verdicts = {(f.scope, f.verdict) for f in findings}
    assert ("connection", "loss-limited") in verdicts
    assert ("host", "loss-limited") in verdicts  # cc in use against the loss peers see
    assert ("host", "rwnd-limited") in verdicts  # 64 kB rmem < 2 × 50 Mbit/s × 40 ms
    rmem = next(f for f in findings if f.subject == "net.ipv4.tcp_rmem")
    assert rmem.evidence["needed_bytes"] == 2 * 250_000
    # sorted: most severe first
    ranks = [{"info": 0, "warn": 1, "error": 2}[f.severity] for f in findings]
    assert ranks == sorted(ranks, reverse=True)


def test_nofile_near_its_limit() -> None:
    f = judge_host(HostFacts(nofile={42: (1020, 1024)}), [], [])
    assert f and f[0].subject == "RLIMIT_NOFILE of pid 42" and f[0].severity == "error"


@pytest.mark.parametrize(
    ("text", "addr", "port"),
    [
        ("10.0.0.2", "10.0.0.2", None),
        ("10.0.0.2:30303", "10.0.0.2", 30303),
        ("[2001:db8::1]:443", "2001:db8::1", 443),
        ("2001:db8::1", "2001:db8::1", None),
        ("::ffff:10.0.0.2", "10.0.0.2", None),
    ],
)
def test_parse_peer(text: str, addr: str, port: int | None) -> None:
    p = parse_peer(text)
    assert (p.addr, p.port) == (addr, port)


@pytest.mark.parametrize(
    "bad", ["10.9.9.9:abc", "10.0.0.1:0", "[::1]x", "[::1", ":80", "10.0.0.1:"]
)
def test_parse_peer_refuses(bad: str) -> None:
    with pytest.raises(InputError):
        parse_peer(bad)


@pytest.mark.parametrize(
    "argv",
    [
        ["diagnose", "--window", "0"],
        ["diagnose", "--window", "abc"],
        ["diagnose", "--peer", "10.9.9.9:abc"],
        ["diagnose", "--pid", "999999"],
        ["diagnose", "--rate", "fast"],
        ["diagnose", "--netns", "nd-no-such-ns"],
        ["diagnose", "--cgroup", "/sys/fs/cgroup/no/such"],
        ["diagnose", "--fail-on", "fatal"],
        ["bdp", "--window", "0"],
        ["bdp", "--peer", "10.9.9.9:abc"],
        ["bdp", "--probe", "10.0.0.1:http"],
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("netdiag: error: ") and " — " in err[0]


def test_table_fits_100_columns_and_lists_every_finding(capsys: pytest.CaptureFixture[str]) -> None:
    from netdiag.cli.diagnose import print_report
    from netdiag.diagnose.run import Report

    col = Collected(
        conns={
            1: series(rate_bps=5.9e6, rwnd=0.9, snd_wnd=32768),
            2: series(rate_bps=0, busy=0.0),
        },
        listeners={3: _listener(3, 2)},
        counters_before={"TcpExt.ListenOverflows": 0},
        counters_after={"TcpExt.ListenOverflows": 4},
    )
    # distinct cookies per socket, as the kernel gives them
    col.conns[2] = [Sample(s.t_s, replace(s.conn, cookie=8, lport=41001)) for s in col.conns[2]]
    facts = HostFacts(listen_overflows=4)
    findings, _ = judge_collected(col, facts)
    print_report(Report(findings, facts, 2.0, connections=2, listeners=1))
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 100
    for v in ("rwnd-limited", "idle", "accept-queue-overflow"):
        assert v in out
