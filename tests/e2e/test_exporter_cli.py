"""`netdiag exporter` as an operator runs it: a child process on sock_diag polling (no BPF),
real loopback sockets, scraped over HTTP, reloaded with SIGHUP, stopped with SIGTERM/SIGINT."""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from netdiag.bench.exporter_process import ExporterProcess
from tests.cli import run_netdiag


@pytest.fixture
def peers() -> Iterator[int]:
    """A listener with connections from three loopback addresses (three peers)."""
    lst = socket.create_server(("127.0.0.1", 0))
    port = int(lst.getsockname()[1])
    socks = []
    for i in range(3):
        c = socket.create_connection(("127.0.0.1", port), source_address=(f"127.0.0.{2 + i}", 0))
        s, _ = lst.accept()
        c.sendall(b"hello")
        s.recv(16)
        socks += [c, s]
    yield port
    for s in [*socks, lst]:
        s.close()


def _exporter(tmp_path: Path, text: str, *flags: str) -> ExporterProcess:
    cfg = tmp_path / "exporter.toml"
    cfg.write_text(text)
    return ExporterProcess(
        ["--config", str(cfg), "--listen", "127.0.0.1:0", "--no-bpf", "--interval", "0.2", *flags]
    )


def test_serves_bounded_series_reloads_on_sighup_and_stops_on_sigterm(
    tmp_path: Path, peers: int
) -> None:
    ex = _exporter(
        tmp_path,
        f"ports = [{peers}]\nmax_series = 2\nverdict_window_s = 0.5\nverdict_interval_s = 1\n",
    )
    try:
        doc = ex.wait_until(lambda d: d["frames"] >= 3, what="three frames")
        assert doc["source"] == "sock_diag" and doc["status"] == "ok"
        m = ex.metrics()
        conns = {s[0]["peer"]: s[1] for s in m["netdiag_tcp_connections"]}
        # three server-side peers + the client side (peer 127.0.0.1) capped at 2 + other
        assert len(conns) == 3 and "other" in conns
        assert sum(conns.values()) == 6
        assert m["netdiag_exporter_series_cap"][0][1] == 2
        assert all("sock_cookie" not in labels for labels, _ in m["netdiag_tcp_connections"])
        v = ex.wait_until(lambda d: True, what="health")  # still healthy
        assert v["status"] == "ok"
        verdicts = ex.json("/verdicts")
        assert verdicts["enabled"] is True
        # reload: a wider cap from the file; a bad file later keeps it
        (tmp_path / "exporter.toml").write_text(f"ports = [{peers}]\nmax_series = 50\n")
        ex.signal(signal.SIGHUP)
        doc = ex.wait_until(lambda d: d["reloads"] == 1, what="the reload")
        assert doc["config"]["max_series"] == 50
        ex.wait_until(lambda d: d["series"] >= 4, what="uncapped series")
        (tmp_path / "exporter.toml").write_text("bogus = 1\n")
        ex.signal(signal.SIGHUP)
        doc = ex.wait_until(lambda d: d["reload_errors"] == 1, what="the refused reload")
        assert doc["config"]["max_series"] == 50 and "bogus" in doc["last_reload_error"]
        assert ex.stop() == 0
    finally:
        ex.kill()
    assert "Traceback" not in "".join(ex.stderr)


def test_ctrl_c_exits_130(tmp_path: Path) -> None:
    ex = _exporter(tmp_path, "verdicts = false\n")
    try:
        ex.wait_until(lambda d: d["frames"] >= 1, what="a frame")
        ex.signal(signal.SIGINT)
        assert ex.wait(30) == 130
    finally:
        ex.kill()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--port", "abc"], "--port: 'abc' is not a number"),
        (["--listen", "nowhere"], "--listen: 'nowhere' is not HOST:PORT"),
        (["--interval", "0"], "--interval: 0.0 must be > 0"),
        (["--config", "/nonexistent.toml"], "config file /nonexistent.toml does not exist"),
        (["--node", "localhost:7601"], "is not an http(s) URL"),
    ],
)
def test_bad_input_is_one_line_exit_2(args: list[str], needle: str) -> None:
    p = run_netdiag("exporter", *args, timeout=60)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("netdiag: error: ") and needle in lines[0]


def test_a_taken_port_is_refused_with_exit_2() -> None:
    holder = socket.create_server(("127.0.0.1", 0))
    try:
        port = holder.getsockname()[1]
        p = run_netdiag("exporter", "--no-bpf", "--listen", f"127.0.0.1:{port}", timeout=60)
        assert p.returncode == 2 and "cannot listen" in p.stderr
    finally:
        holder.close()
