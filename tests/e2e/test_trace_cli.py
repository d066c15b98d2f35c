"""trace-peers, probes and bdp as an operator runs them: a subprocess, real loopback sockets."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
from collections.abc import Iterator

import pytest

from tests.cli import run_netdiag


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return run_netdiag(*args, timeout=timeout)


@pytest.fixture
def busy_pair() -> Iterator[tuple[socket.socket, int]]:
    lst = socket.create_server(("127.0.0.1", 0))
    port = lst.getsockname()[1]
    cli = socket.create_connection(("127.0.0.1", port))
    srv, _ = lst.accept()
    stop = threading.Event()

    def pump() -> None:
        while not stop.is_set():
            cli.sendall(b"e" * 65536)

    def drain() -> None:
        while srv.recv(1 << 20):
            pass

    threads = [threading.Thread(target=f, daemon=True) for f in (pump, drain)]
    for t in threads:
        t.start()
    yield cli, port
    stop.set()
    threads[0].join()
    cli.close()
    threads[1].join()
    srv.close()
    lst.close()


def test_trace_peers_sock_diag_fallback_end_to_end(busy_pair: tuple[socket.socket, int]) -> None:
    cli, port = busy_pair
    cookie = int.from_bytes(cli.getsockopt(socket.SOL_SOCKET, 57, 8), "little")
    r = run(
        "trace-peers",
        "--no-bpf",
        "--json",
        "--count",
        "2",
        "--interval",
        "0.3",
        "--port",
        str(port),
    )
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(lines) == 2 and lines[-1]["source"] == "sock_diag"
    assert "eBPF unavailable" in lines[-1]["notes"][0]
    row = next(x for x in lines[-1]["rows"] if x["sock_cookie"] == cookie)
    assert row["min_rtt_us"] > 0 and row["acked_bps"] > 0 and row["rport"] == port


def test_trace_peers_table_fits_100_columns(busy_pair: tuple[socket.socket, int]) -> None:
    _cli, port = busy_pair
    r = run("trace-peers", "--no-bpf", "--count", "1", "--interval", "0.3", "--port", str(port))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert any(line.startswith("PEER") for line in lines)
    assert any(f"127.0.0.1:{port}" in line for line in lines)
    assert max(len(line) for line in lines) <= 100


def test_bdp_json_end_to_end(busy_pair: tuple[socket.socket, int]) -> None:
    _cli, port = busy_pair
    r = run("bdp", "--json", "--port", str(port), "--window", "0.4", "--samples", "3")
    assert r.returncode == 0, r.stderr
    conns = json.loads(r.stdout)["connections"]
    sender = next(c for c in conns if c["peer"] == f"127.0.0.1:{port}")
    assert sender["min_rtt_us"] > 0 and sender["snd_cwnd"] > 0 and sender["verdict"]


def test_probes_catalog_and_errors() -> None:
    r = run("probes", "--json")
    assert r.returncode == 0
    assert {p["name"] for p in json.loads(r.stdout)["probes"]} >= {
        "tcp_peers",
        "tcp_cong",
        "tcp_drops",
    }
    bad = run("probes", "run", "nope")
    assert bad.returncode == 2 and bad.stderr.startswith(
        "netdiag: error: no probe 'nope' — known probes:"
    )
