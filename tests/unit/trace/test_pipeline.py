"""The trace pipeline, read-time membership, sock_diag seeding, AGE and bounded Prometheus
labels — on fake sources, no kernel."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from netdiag.cli.main import main
from netdiag.errors import InputError
from netdiag.measure.sockdiag import TcpConn
from netdiag.trace import fallback, listeners, manifest, prom
from netdiag.trace.engine import Snapshot
from netdiag.trace.filters import Filters
from netdiag.trace.membership import Membership
from netdiag.trace.peers import Seeder, membership_stage
from netdiag.trace.pipeline import Frame, Pipeline, age_stage, row_filter, sort_stage
from tests.unit.tcpkit import conn


def _snap(rows: list[dict[str, Any]], t_ns: int = 10_000_000_000, lost: int = 0) -> Snapshot:
    return Snapshot("tcp_peers", t_ns, 1.0, rows, {}, 100, 100.0, lost)


class FakeSource:
    def __init__(self, snaps: list[Snapshot]) -> None:
        self.snaps, self.closed = snaps, False

    def read(self) -> Snapshot:
        return self.snaps.pop(0)

    def close(self) -> None:
        self.closed = True


class Collect:
    def __init__(self) -> None:
        self.frames: list[Frame] = []

    def emit(self, frame: Frame) -> None:
        self.frames.append(frame)


class Ticks:
    def __init__(self, n: int) -> None:
        self.n = n

    def wait(self, seconds: float) -> bool:
        self.n -= 1
        return self.n >= 0


def test_pipeline_runs_stages_in_order_then_sinks_and_closes_everything() -> None:
    src = FakeSource([_snap([{"a": 1}, {"a": 3}, {"a": 2}]) for _ in range(5)])
    sink = Collect()
    closed: list[str] = []
    p = Pipeline(
        src,
        [row_filter(lambda r: r["a"] != 2), sort_stage(lambda: "a")],
        [sink],
        [lambda: closed.append("cong"), lambda: closed.append("overhead")],
    )
    with p:
        assert p.run(0.0, count=10, ticker=Ticks(3)) == 3  # the ticker said stop first
    assert [r["a"] for r in sink.frames[0].snap.rows] == [3, 1]
    assert closed == ["overhead", "cong"] and src.closed


class Waits:
    def __init__(self) -> None:
        self.waits: list[float] = []

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        return True


def test_the_first_read_comes_early_counted_from_when_the_source_opened() -> None:
    """--first-read: set-up after attach overlaps the first window; later reads every interval;
    the early read counts as one of --count; never later than one interval."""
    t = [100.0]
    src = FakeSource([_snap([]) for _ in range(6)])
    p = Pipeline(src, opened=100.0)
    t[0] = 100.1  # 0.1 s of set-up since the source attached
    w = Waits()
    frames = list(p.frames(2.0, count=3, ticker=w, clock=lambda: t[0], first_s=0.25))
    assert len(frames) == 3
    assert w.waits[0] == pytest.approx(0.15) and w.waits[1:] == [2.0, 2.0]
    late = Waits()  # set-up longer than the first window: read at once
    list(
        Pipeline(src, opened=99.0).frames(
            2.0, count=1, ticker=late, clock=lambda: t[0], first_s=0.25
        )
    )
    assert late.waits == [0.0]
    capped = Waits()  # a first read later than the interval is the interval
    list(
        Pipeline(src, opened=100.1).frames(
            0.1, count=1, ticker=capped, clock=lambda: t[0], first_s=5
        )
    )
    assert capped.waits == [pytest.approx(0.1)]
    whole = Waits()  # without first_s: a whole interval first, as before
    list(Pipeline(src, opened=0.0).frames(2.0, count=1, ticker=whole, clock=lambda: t[0]))
    assert whole.waits == [2.0]


def test_pipeline_close_detaches_the_rest_when_one_part_fails() -> None:
    src = FakeSource([])

    def boom() -> None:
        raise RuntimeError("x")

    p = Pipeline(src, closers=[boom])
    with pytest.raises(RuntimeError):
        p.close()
    assert src.closed


def _tcp(
    cookie: int, inode: int = 0, state: str = "ESTABLISHED", bytes_acked: int = 0, **kw: Any
) -> TcpConn:
    return replace(conn(cookie=cookie, inode=inode, bytes_acked=bytes_acked), state=state, **kw)


def test_membership_keeps_a_pid_s_sockets_and_still_counts_them_once_orphaned() -> None:
    m = Membership(pids=(42,), inodes_of=lambda pid: {100} if pid == 42 else set())
    m.update([_tcp(1, inode=100), _tcp(2, inode=200)])
    assert m.keep({"sock_cookie": 1}) and not m.keep({"sock_cookie": 2})
    # the process closed socket 1 (orphan, inode 0) and the socket is about to close
    m.update([_tcp(1, inode=0, state="FIN_WAIT1"), _tcp(2, inode=200)])
    assert m.keep({"sock_cookie": 1, "closed_ns": 5})


def test_membership_attributes_connections_that_lived_between_two_reads() -> None:
    lst = _tcp(9, inode=300, state="LISTEN", lport=5201)
    m = Membership(pids=(42,), inodes_of=lambda pid: {300} if pid == 42 else set())
    m.update([lst])
    # active open recorded at connect(): the tgid decides
    assert m.keep({"sock_cookie": 11, "closed_ns": 1, "open_pid": 42})
    assert not m.keep({"sock_cookie": 12, "closed_ns": 1, "open_pid": 7})
    # passive open: accepted by the owner of the listener on its local port
    assert m.keep({"sock_cookie": 13, "closed_ns": 1, "open_pid": 0, "lport": 5201})
    assert not m.keep({"sock_cookie": 14, "closed_ns": 1, "open_pid": 0, "lport": 80})
    # alive but not in sock_diag's answer: not ours (another namespace)
    assert not m.keep({"sock_cookie": 15, "open_pid": 42})


def test_membership_netns_uses_the_namespace_addresses_and_loopback_needs_a_listener() -> None:
    m = Membership(netns="x", addresses_of=lambda _ns: {"10.0.0.1", "127.0.0.1"})
    m.update([_tcp(1), _tcp(9, state="LISTEN", lport=5201, laddr="0.0.0.0")])
    assert m.keep({"sock_cookie": 1})  # in the namespace's sock_diag answer
    assert m.keep({"sock_cookie": 2, "closed_ns": 1, "laddr": "10.0.0.1", "lport": 40000})
    assert not m.keep({"sock_cookie": 3, "closed_ns": 1, "laddr": "10.9.9.9", "lport": 1})
    assert not m.keep({"sock_cookie": 4, "closed_ns": 1, "laddr": "127.0.0.1", "lport": 4})
    assert m.keep(
        {"sock_cookie": 5, "closed_ns": 1, "laddr": "127.0.0.1", "lport": 4, "rport": 5201}
    )


def test_membership_cgroup_by_socket_recorded_connect_or_listener(tmp_path: Path) -> None:
    (tmp_path / "child").mkdir()
    child = (tmp_path / "child").stat().st_ino
    m = Membership(cgroup=tmp_path)
    m.update([_tcp(1, inode=5, cgroup_id=child), _tcp(2, inode=6, cgroup_id=1)])
    assert m.keep({"sock_cookie": 1}) and not m.keep({"sock_cookie": 2})
    assert m.keep({"sock_cookie": 3, "closed_ns": 1, "open_cgroup": child})
    assert not m.keep({"sock_cookie": 4, "closed_ns": 1, "open_cgroup": 99})


def test_membership_stage_decides_after_the_read_so_a_new_connection_loses_nothing() -> None:
    """The old kernel allowlist missed a connection born after the last refresh; deciding
    at read time keeps its whole count."""
    flt = Filters(pids=(42,))
    m = Membership(pids=(42,), inodes_of=lambda _pid: {100})
    stage = membership_stage(flt, m)
    f = Frame(_snap([{"sock_cookie": 1, "bytes_acked": 5000, "retrans": 3}]))
    f.conns = [_tcp(1, inode=100)]  # born during this interval, first seen now
    stage(f)
    assert [r["bytes_acked"] for r in f.snap.rows] == [5000]


def test_seeder_adds_idle_sockets_with_counters_from_first_sight() -> None:
    probe = manifest.load("tcp_peers")
    m = Membership()
    seeder = Seeder(probe, m)
    idle = _tcp(7, inode=1)
    seeder.prime([replace(idle, info=replace(idle.info, bytes_acked=1000, total_retrans=2))])
    f = Frame(_snap([{"sock_cookie": 1}]))
    f.conns = [
        replace(idle, info=replace(idle.info, bytes_acked=1000, total_retrans=3)),
        _tcp(1),
        _tcp(8, state="LISTEN"),
    ]
    seeder(f)
    by = {r["sock_cookie"]: r for r in f.snap.rows}
    assert set(by) == {1, 7}, "listeners are not connections; the probe's row wins"
    assert by[7]["from_sock_diag"] and by[7]["retrans"] == 1 and by[7]["bytes_acked"] == 0
    assert by[7]["acked_bps"] == 0.0 and f.extra["rows_from_sock_diag"] == 1


def test_age_is_exact_when_seen_opening_and_a_lower_bound_otherwise() -> None:
    stage = age_stage(lambda: 4_000_000_000)
    f = Frame(
        _snap(
            [{"open_ns": 5, "age_s": 2.0}, {"open_ns": 0, "age_s": 0.2}, {"state": "LISTEN"}],
            t_ns=10_000_000_000,
        )
    )
    stage(f)
    a, b, lst = f.snap.rows
    assert a["age_exact"] and a["age_s"] == 2.0
    assert b["age_exact"] is False and b["age_s"] == 6.0  # at least as old as the probe
    assert "age_s" not in lst
    from netdiag.trace import sinks

    assert sinks.cell("age_s", b) == "≥6s" and sinks.cell("age_s", a) == "2s"


def test_fallback_has_no_rate_until_two_samples() -> None:
    p = manifest.load("tcp_peers")
    conns = [_tcp(5, bytes_acked=1000)]
    clock = iter(range(0, 10_000_000_000, 1_000_000_000))
    poller = fallback.Poller(
        p, (), None, snapshot=lambda *_a, **_k: list(conns), clock=lambda: next(clock)
    ).open()
    conns[:] = [_tcp(5, bytes_acked=3000), _tcp(6, bytes_acked=10**9)]
    rows = {r["sock_cookie"]: r for r in poller.read().rows}
    assert rows[5]["acked_bps"] == 2000 * 8  # baseline taken at open
    assert rows[6]["acked_bps"] is None  # first sample: its lifetime total is not a rate
    conns[:] = [_tcp(6, bytes_acked=10**9 + 500)]
    assert poller.read().rows[0]["acked_bps"] == 500 * 8


def _row(cookie: int, raddr: str, lport: int, **kw: Any) -> dict[str, Any]:
    return {
        "sock_cookie": cookie,
        "raddr": raddr,
        "lport": lport,
        "state": "ESTABLISHED",
        "srtt_us": 1000 * cookie,
        "snd_cwnd": 10,
        "bytes_acked": 100,
        "retrans": 1,
        "acked_bps": 800.0,
        **kw,
    }


def _expose(c: prom.PromCollector) -> str:
    reg = CollectorRegistry()
    reg.register(c)  # type: ignore[arg-type]
    return generate_latest(reg).decode()


def test_prometheus_labels_are_peer_and_port_never_the_socket() -> None:
    c = prom.PromCollector()
    lst = _tcp(99, state="LISTEN", lport=30303)
    f = Frame(
        _snap([_row(1, "10.0.0.2", 30303), _row(2, "10.0.0.2", 30303), _row(3, "10.0.0.3", 41234)])
    )
    f.conns = [lst]
    c.update(f)
    text = _expose(c)
    assert "sock_cookie" not in text
    assert 'netdiag_tcp_connections{local_port="30303",peer="10.0.0.2",peer_id=""} 2.0' in text
    # outbound: the random local port would make one series per connection
    assert 'local_port="ephemeral",peer="10.0.0.3"' in text
    assert 'netdiag_tcp_srtt_max_microseconds{local_port="30303",peer="10.0.0.2"' in text
    assert "# HELP netdiag_tcp_retransmitted_skbs_total Retransmitted skbs" in text
    assert "segments\n" in text.split("HELP netdiag_tcp_retransmitted_skbs_total")[1]


def test_prometheus_series_are_capped_with_an_other_bucket_and_counters_never_fall() -> None:
    c = prom.PromCollector(max_series=2)
    rows = [_row(i, f"10.0.1.{i}", 5000) for i in range(1, 6)]
    c.update(Frame(_snap(rows)))
    assert c.series_count() == 3  # two admitted + other
    text = _expose(c)
    assert 'netdiag_tcp_connections{local_port="other",peer="other",peer_id=""} 3.0' in text
    # sockets close: the totals keep what they had counted
    c.update(Frame(_snap([replace_row(rows[0], bytes_acked=300)])))
    text = _expose(c)
    first = 'netdiag_tcp_acked_bytes_total{local_port="ephemeral",peer="10.0.1.1",peer_id=""}'
    assert f"{first} 300.0" in text
    assert 'netdiag_tcp_acked_bytes_total{local_port="other",peer="other",peer_id=""} 300.0' in text
    with pytest.raises(InputError):
        prom.PromCollector(max_series=0)


def replace_row(r: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return {**r, **kw}


def test_prometheus_server_serves_the_latest_frame() -> None:
    import socket
    import urllib.request

    c = prom.PromCollector()
    c.update(Frame(_snap([_row(1, "10.0.0.2", 1)])))
    server = prom.serve("127.0.0.1:0", c)
    try:
        port = server.server_address[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    finally:
        server.shutdown()
    assert "netdiag_tcp_cwnd_max_segments" in text and 'peer="10.0.0.2"' in text
    with pytest.raises(InputError, match="not HOST:PORT"):
        prom.serve("127.0.0.1:70000", c)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        with pytest.raises(InputError, match="cannot listen"):
            prom.serve(f"127.0.0.1:{holder.getsockname()[1]}", c)


def test_netstat_parsing_reads_listen_overflows() -> None:
    text = (
        "TcpExt: SyncookiesSent ListenOverflows ListenDrops\n"
        "TcpExt: 0 7 9\n"
        "IpExt: InOctets\n"
        "IpExt: 100\n"
    )
    c = listeners.parse_netstat(text)
    assert c["TcpExtListenOverflows"] == 7 and c["TcpExtListenDrops"] == 9
    d = listeners.OverflowDelta(None, read=lambda _ns: {"listen_overflows": 7})
    d.read = lambda _ns: {"listen_overflows": 10}
    assert d.sample() == {"listen_overflows_total": 10, "listen_overflows_delta": 3}


@pytest.mark.parametrize(
    "args",
    [
        ["--pid", "999999999"],
        ["--netns", "nd-no-such-namespace"],
        ["--pid", "0"],
    ],
)
def test_unknown_pid_or_namespace_is_refused_with_exit_2(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["trace-peers", "--no-bpf", "--count", "1", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("netdiag: error:") and len(err.strip().splitlines()) == 1


def test_trace_peers_json_fallback_end_to_end(capsys: pytest.CaptureFixture[str]) -> None:
    """Through the real CLI on this host's sock_diag (no BPF): one object per interval, every
    row with an AGE that says whether it is exact."""
    assert main(["trace-peers", "--no-bpf", "--json", "--count", "2", "--interval", "0.05"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(lines) == 2 and all(o["source"] == "sock_diag" for o in lines)
    for o in lines:
        for r in o["rows"]:
            assert r["age_exact"] is False and r["age_s"] >= 0


def test_verdict_column_needs_a_window_of_two_reads_and_uses_the_engine() -> None:
    from netdiag.diagnose import VERDICTS
    from netdiag.diagnose.live import VerdictStage

    stage = VerdictStage(window_reads=3)
    c1 = _tcp(1, bytes_acked=1000)
    f1 = Frame(_snap([{"sock_cookie": 1}], t_ns=1_000_000_000))
    f1.conns = [c1]
    stage(f1)
    assert "verdict" not in f1.snap.rows[0], "one snapshot is no window"
    f2 = Frame(_snap([{"sock_cookie": 1}, {"sock_cookie": 2}], t_ns=2_000_000_000))
    f2.conns = [_tcp(1, bytes_acked=1000), _tcp(2)]
    stage(f2)
    r1, r2 = f2.snap.rows
    assert r1["verdict"] in VERDICTS and r1["verdict_summary"]
    assert "verdict" not in r2 and f2.extra["verdicts"] == {r1["verdict"]: 1}
    with pytest.raises(ValueError):
        VerdictStage(window_reads=1)


def test_pid_filter_follows_the_process_into_its_namespace(tmp_path: Path) -> None:
    from netdiag.trace.membership import netns_of_pids

    (tmp_path / "self/ns").mkdir(parents=True)
    (tmp_path / "self/ns/net").write_text("")
    (tmp_path / "7/ns").mkdir(parents=True)
    (tmp_path / "7/ns/net").symlink_to(tmp_path / "self/ns/net")  # our namespace
    (tmp_path / "8/ns").mkdir(parents=True)
    (tmp_path / "8/ns/net").write_text("")  # another one, with no name in /run/netns
    assert netns_of_pids([7], proc=tmp_path) is None
    with pytest.raises(InputError, match="unnamed network namespace"):
        netns_of_pids([8], proc=tmp_path)
    with pytest.raises(InputError, match="different network namespaces"):
        netns_of_pids([7, 8], proc=tmp_path)


def test_pre_read_hooks_run_a_short_lead_before_every_read() -> None:
    """The probes' run-time stats are on only in this lead: at most a tenth of each wait."""
    src = FakeSource([_snap([]) for _ in range(4)])
    events: list[str] = []

    class Log:
        def wait(self, seconds: float) -> bool:
            events.append(f"wait {seconds:.3f}")
            return True

    p = Pipeline(src, opened=0.0, pre_read=[lambda: events.append("open")], pre_read_s=0.1)
    p.sinks.append(SimpleNamespace(emit=lambda _f: events.append("read")))
    list(p.frames(2.0, count=2, ticker=Log(), clock=lambda: 0.0, first_s=0.25))
    assert events == [
        "wait 0.225",
        "open",
        "wait 0.025",
        "read",
        "wait 1.900",
        "open",
        "wait 0.100",
        "read",
    ]


def test_the_stats_window_closes_as_the_wait_ends_before_the_read_and_the_stages() -> None:
    """sample() must not count the tracer's own work after the wait (sock_diag, tcp_info,
    --node HTTP): it runs right after the lead, before source.read() and every stage."""
    events: list[str] = []

    class Src(FakeSource):
        def read(self) -> Snapshot:
            events.append("read")
            return super().read()

    class Log:
        def wait(self, seconds: float) -> bool:
            events.append("wait")
            return True

    def sample() -> dict[str, Any]:
        events.append("sample")
        return {"bpf_runs": 3}

    p = Pipeline(
        Src([_snap([]) for _ in range(2)]),
        stages=[lambda _f: events.append("stage")],
        pre_read=[lambda: events.append("open")],
        post_wait=[sample],
    )
    p.sinks.append(SimpleNamespace(emit=lambda _f: events.append("emit")))
    frames = list(p.frames(1.0, count=2, ticker=Log(), clock=lambda: 0.0))
    once = ["wait", "open", "wait", "sample", "read", "stage", "emit"]
    assert events == once * 2
    assert all(f.extra["bpf_runs"] == 3 for f in frames)  # what it returned is in the header


def test_a_stop_before_the_lead_skips_the_hooks() -> None:
    src = FakeSource([_snap([]) for _ in range(2)])
    opened: list[int] = []
    p = Pipeline(src, pre_read=[lambda: opened.append(1)])
    assert p.run(1.0, count=5, ticker=Ticks(0)) == 0 and opened == []
