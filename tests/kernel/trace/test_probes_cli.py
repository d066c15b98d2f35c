"""tcp_drops, tcp_cong, the CLI end to end on real sockets, --node join, fallback, bdp."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from netdiag.bench import testbed
from netdiag.bench.traffic import Pair, make_pair
from netdiag.cli.main import main
from netdiag.measure import rttprobe, sockdiag
from netdiag.trace import engine, manifest
from tests.labkit import node_cluster, rtt_floor_us


def test_drops_are_named_by_the_running_kernel() -> None:
    p = manifest.load("tcp_drops")
    with engine.Session(p) as s:
        s.read()
        lst = socket.create_server(("127.0.0.1", 0))
        port = lst.getsockname()[1]
        lst.close()  # nothing listens: the SYN is dropped with NO_SOCKET, we get a RST
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2)
        time.sleep(0.05)
        snap = s.read()
    rows = [r for r in snap.rows if r["reason"] == "NO_SOCKET" and r["count_per_s"]]
    assert rows, f"no NO_SOCKET drop recorded: {snap.rows[:5]}"
    assert rows[0]["protocol"] == "IPv4"
    assert rows[0]["location"].startswith("tcp_v4_rcv"), rows[0]


@pytest.mark.slow
def test_cong_states_on_a_lossy_path() -> None:
    with testbed.path3(rate_mbit=50) as path:
        pair = make_pair(path.server, path.client, path.server_ip)
        p = manifest.load("tcp_cong")
        try:
            with engine.Session(p, engine.defines_for(p, (pair.port,), False)) as s:
                pair.send(4 << 20)
                end = time.monotonic() + 20
                while pair.got[0] < (4 << 20) and time.monotonic() < end:
                    time.sleep(0.02)
                snap = s.read()
        finally:
            pair.close()
    client = [r for r in snap.rows if r["rport"] == pair.port]
    assert client, snap.rows
    r = client[0]
    assert r["enters"]["Recovery"] + r["enters"]["Loss"] >= 1, r
    spent = r["time_ms"]["Recovery"] + r["time_ms"]["Loss"]
    assert spent > 0 and sum(r["time_ms"].values()) >= spent


@pytest.fixture
def node_for() -> Iterator[Callable[[list[dict[str, Any]]], str]]:
    servers: list[ThreadingHTTPServer] = []

    def start(peers: list[dict[str, Any]]) -> str:
        body = json.dumps(peers).encode()

        class H(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200 if self.path == "/peers" else 404)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_a: Any) -> None:
                pass

        srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}"

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


@contextlib.contextmanager
def _sending(pair: Pair, close: bool = False) -> Iterator[None]:
    """The pair's client sends without pause for the body; then it stops (and the pair is
    closed, with ``close``)."""
    stop = threading.Event()

    def body() -> None:
        while not stop.is_set():
            pair.client.sendall(b"y" * 65536)

    t = threading.Thread(target=body, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()
        if close:
            pair.close()


def _bdp_json(netns: str, port: int, window_s: str) -> None:
    """`netdiag bdp --json` on the connections to ``port`` in ``netns`` (3 samples)."""
    args = ["--netns", netns, "--port", str(port), "--window", window_s, "--samples", "3"]
    assert main(["bdp", "--json", *args]) == 0


def _run_json(args: list[str], capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    assert main(args) == 0
    return [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")
    ]


@pytest.mark.parametrize("no_bpf", [False, True], ids=["ebpf", "sock_diag"])
def test_trace_peers_json_labels_rows_from_the_node(
    loopback_pair: Callable[..., Pair],
    node_for: Callable[[list[dict[str, Any]]], str],
    capsys: pytest.CaptureFixture[str],
    no_bpf: bool,
) -> None:
    pair = loopback_pair()
    url = node_for(
        [
            {
                "peer_id": "7f3a9c",
                "address": f"127.0.0.1:{pair.port}",
                "direction": "outbound",
                "mesh": True,
                "score": 3.5,
                "socket_cookie": pair.cookie,
            }
        ]
    )
    with _sending(pair):
        args = [
            "trace-peers",
            "--json",
            "--count",
            "2",
            "--interval",
            "0.3",
            "--port",
            str(pair.port),
            "--node",
            url,
        ]
        lines = _run_json([*args, "--no-bpf"] if no_bpf else args, capsys)
    assert len(lines) == 2
    last = lines[-1]
    assert last["source"] == ("sock_diag" if no_bpf else "ebpf")
    assert last["node_matched"] == 1
    mine = [r for r in last["rows"] if r["sock_cookie"] == pair.cookie]
    assert mine and mine[0]["peer_id"] == "7f3a9c" and mine[0]["mesh"] is True
    assert mine[0]["min_rtt_us"] > 0 and mine[0]["acked_bps"] > 0
    others = [r for r in last["rows"] if r["sock_cookie"] != pair.cookie]
    assert all("peer_id" not in r for r in others)
    if not no_bpf:
        assert last["events_per_s"] > 0 and last["lost_events"] == 0
        assert "bpf_ns_per_event" in last


def test_trace_peers_pid_filter_keeps_only_our_sockets(
    loopback_pair: Callable[..., Pair],
    capsys: pytest.CaptureFixture[str],
) -> None:
    import os

    pair = loopback_pair()
    with _sending(pair):
        lines = _run_json(
            [
                "trace-peers",
                "--json",
                "--count",
                "2",
                "--interval",
                "0.3",
                "--pid",
                str(os.getpid()),
            ],
            capsys,
        )
    cookies = {r["sock_cookie"] for r in lines[-1]["rows"]}
    ours = {c.cookie for c in sockdiag.snapshot() if c.lport == pair.port or c.rport == pair.port}
    assert pair.cookie in cookies
    assert cookies <= ours | {pair.cookie} | {
        int.from_bytes(pair.server.getsockopt(socket.SOL_SOCKET, 57, 8), "little")
    }


def test_bdp_json_on_a_shaped_path(capsys: pytest.CaptureFixture[str]) -> None:
    with testbed.path3(rate_mbit=50) as path:
        pair = make_pair(path.server, path.client, path.server_ip)
        with _sending(pair, close=True):
            time.sleep(0.5)
            _bdp_json(path.client, pair.port, window_s="0.5")
    out = json.loads(capsys.readouterr().out)
    conns = out["connections"]
    assert len(conns) == 1
    c = conns[0]
    assert c["sock_cookie"] > 0 and c["min_rtt_us"] > 0 and c["bdp_bytes"] > 0
    # a bulk sender is path-bound, so its samples were checked against the rate the path
    # sustained: an ACK-compression burst (115 Mbit/s once, on a loaded host) cannot pass,
    # and bbr's bw (or the delivery rate) stays within the 50 Mbit/s bottleneck (a rate
    # sample over a short interval may overshoot a little); how close it gets is a figure
    assert c["bw_checked"] and 0 < c["sustained_bps"] <= 1.2 * 50e6, c
    assert 0 < c["bw_bps"] <= 1.2 * 50e6, c
    assert c["bdp_bytes"] == pytest.approx(c["bw_bps"] / 8 * c["min_rtt_us"] / 1e6, rel=0.05), c
    assert c["verdict"]


def test_bdp_probe_measures_handshake_and_leaves_no_connection() -> None:
    lst = socket.create_server(("127.0.0.1", 0))
    port = lst.getsockname()[1]
    try:
        res = rttprobe.handshake_rtt(f"127.0.0.1:{port}", count=2)
        assert res.answered == 2 and res.refused == 0
        assert len(res.rtt_us) == 2 and res.min_rtt_us is not None and res.min_rtt_us > 0
        time.sleep(0.1)
        est = [
            c
            for c in sockdiag.snapshot()
            if port in (c.lport, c.rport) and c.state == "ESTABLISHED"
        ]
        assert not est, f"probe left connections behind: {est}"
    finally:
        lst.close()


@pytest.mark.slow
def test_trace_peers_labels_a_three_node_lab_cluster(capsys: pytest.CaptureFixture[str]) -> None:
    from netdiag.lab import Lab
    from netdiag.lab.cluster import API_PORT

    topo = node_cluster("trace", (("n0", "n1"), ("n1", "n2"), ("n0", "n2")))
    with Lab.up(topo) as lab:
        n0 = lab.topology.node("n0")
        peers: list[dict[str, Any]] = []
        deadline = time.monotonic() + 30
        while len(peers) < 2 and time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                peers = lab.node_api("n0", "/peers")
            time.sleep(0.3)
        assert len(peers) == 2, peers
        url = f"http://{n0.address}:{API_PORT}"
        lines = _run_json(
            [
                "trace-peers",
                "--json",
                "--count",
                "2",
                "--interval",
                "0.5",
                "--netns",
                lab.ns("n0"),
                "--node",
                url,
            ],
            capsys,
        )
    last = lines[-1]
    ids = {p["peer_id"] for p in peers}
    labelled = [r for r in last["rows"] if r.get("peer_id")]
    assert last["node_matched"] == 2
    assert {r["peer_id"] for r in labelled} == ids
    # the links' 10 ms: from the probe's smoothed RTT and the kernel's raw minimum (joined)
    floor = rtt_floor_us(10_000)
    assert all(r["srtt_min_us"] >= floor for r in labelled), labelled
    assert all(floor <= r["min_rtt_us"] <= r["srtt_min_us"] for r in labelled), labelled
    assert last["sock_diag_joined"] >= 2


@pytest.mark.slow
def test_bdp_verdict_names_a_small_receive_buffer(capsys: pytest.CaptureFixture[str]) -> None:
    """A real rwnd-limited connection: 20 ms x 50 Mbit/s (BDP 125 kB) to a receiver whose
    SO_RCVBUF is pinned at 32 kB. bdp must say rwnd-limited and size tcp_rmem in its fix."""
    from netdiag.lab import Lab, two_node

    with Lab.up(two_node(delay_s=0.02, rate_bps=50_000_000, name="trace")) as lab:
        pair = make_pair(lab.ns("b"), lab.ns("a"), lab.addr("b"), rcvbuf=32 * 1024)
        with _sending(pair, close=True):
            time.sleep(1.5)
            _bdp_json(lab.ns("a"), pair.port, window_s="1")
    c = json.loads(capsys.readouterr().out)["connections"][0]
    assert c["limits"]["rwnd"] >= 0.2, c
    assert c["verdict"] == "rwnd-limited", c
    assert "raise tcp_rmem max on the receiver" in c["fix"], c["fix"]
    assert c["min_rtt_us"] >= 0.98 * 20_000  # the link's 20 ms is the floor


@pytest.mark.slow
def test_trace_peers_cong_shows_time_in_recovery(capsys: pytest.CaptureFixture[str]) -> None:
    with testbed.path3(rate_mbit=50) as path:
        pair = make_pair(path.server, path.client, path.server_ip)
        cookie = pair.cookie
        with _sending(pair, close=True):
            lines = _run_json(
                [
                    "trace-peers",
                    "--json",
                    "--cong",
                    "--count",
                    "4",
                    "--interval",
                    "1",
                    "--port",
                    str(pair.port),
                ],
                capsys,
            )
    # the first loss may come a few intervals in (slow start on a loaded host): judge the
    # last interval in which tcp_cong saw this connection leave Open
    joined = [ln for ln in lines if ln["cong_joined"] >= 1]
    assert joined, [ln["cong_joined"] for ln in lines]
    last = joined[-1]
    row = next(r for r in last["rows"] if r["sock_cookie"] == cookie)
    # a 50 Mbit/s TBF with a 20 kB queue drops: the sender has been in recovery
    assert row["recovery_ms"] + row["loss_ms"] > 0 and row["recoveries"] >= 1, row
    assert row["retrans"] > 0
