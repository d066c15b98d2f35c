"""Real TCP traffic helpers for the probe tests: loopback pairs and the three-namespace path."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from netdiag.kernel import netns
from netdiag.trace import testbed
from tests.conftest import missing_bcc, missing_tool

SO_COOKIE = 57


def cookie_of(s: socket.socket) -> int:
    return int.from_bytes(s.getsockopt(socket.SOL_SOCKET, SO_COOKIE, 8), "little")


@dataclass
class Pair:
    """A connected client/server pair with a reader thread draining the server side."""

    client: socket.socket
    server: socket.socket
    port: int
    reader: threading.Thread
    got: list[int] = field(default_factory=lambda: [0])

    @property
    def cookie(self) -> int:
        return cookie_of(self.client)

    def send(self, nbytes: int, chunk: int = 1 << 16) -> None:
        buf = b"x" * chunk
        left = nbytes
        while left > 0:
            n = min(left, chunk)
            self.client.sendall(buf[:n])
            left -= n

    def close(self) -> None:
        self.client.close()
        self.reader.join(timeout=10)
        self.server.close()


def make_pair(
    listen_ns: str | None,
    connect_ns: str | None,
    host: str,
    port: int = 0,
    echo: bool = False,
    cc: str | None = None,
) -> Pair:
    lst = netns.run_in(listen_ns, lambda: socket.create_server((host, port)))
    p = lst.getsockname()[1]

    def connect() -> socket.socket:
        s = socket.socket()
        if cc:  # per socket: the host's default stays untouched
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, cc.encode())
        s.settimeout(10)
        s.connect((host, p))
        return s

    cli = netns.run_in(connect_ns, connect)
    srv, _ = lst.accept()
    lst.close()
    got = [0]

    def drain() -> None:
        while True:
            b = srv.recv(1 << 20)
            if not b:
                return
            got[0] += len(b)
            if echo and b.endswith(b"?"):
                srv.sendall(b"!")

    t = threading.Thread(target=drain, daemon=True)
    t.start()
    return Pair(cli, srv, p, t, got)


def ping_pong(p: Pair, n: int = 3) -> None:
    for _ in range(n):
        p.client.sendall(b"?")
        assert p.client.recv(1) == b"!"


def nstat_abs(ns: str | None, counter: str) -> int:
    cmd = ["nstat", "-az", counter]
    if ns:
        cmd = ["ip", "netns", "exec", ns, *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0] == counter:
            return int(parts[1])
    raise AssertionError(f"nstat has no {counter}: {out}")


def bpf_fds() -> int:
    """Open fds of this process that are BPF programs or perf events (attachments)."""
    import os

    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            t = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if t in ("anon_inode:bpf-prog", "anon_inode:[perf_event]"):
            n += 1
    return n


def progs_of(pid: int) -> list[int]:
    """Ids of the BPF programs process `pid` holds (prog_id in /proc/PID/fdinfo; this
    bpftool build reports no `pids`)."""
    import os

    ids = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:bpf-prog":
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                for line in f:
                    if line.startswith("prog_id:"):
                        ids.append(int(line.split()[1]))
        except OSError:
            continue
    return ids


def loaded_prog_ids() -> set[int]:
    """Every BPF program the kernel has loaded, per bpftool."""
    out = subprocess.run(
        ["bpftool", "prog", "show", "-j"], capture_output=True, text=True, check=True
    ).stdout
    return {int(p["id"]) for p in json.loads(out or "[]")}


@pytest.fixture(autouse=True)
def _needs_bcc_and_tools() -> None:
    reason = missing_bcc() or missing_tool("ip", "tc", "nstat", "bpftool")
    if reason:
        pytest.skip(reason)


@pytest.fixture
def lossy_path() -> Iterator[testbed.Path3]:
    """client — router (TBF 50 Mbit/s, 20 kB queue: real drops) — server."""
    with testbed.path3(rate_mbit=50) as p:
        yield p


@pytest.fixture
def loopback_pair() -> Iterator[Callable[..., Pair]]:
    made: list[Pair] = []

    def mk(echo: bool = False, cc: str | None = None) -> Pair:
        p = make_pair(None, None, "127.0.0.1", echo=echo, cc=cc)
        made.append(p)
        return p

    yield mk
    for p in made:
        try:
            p.close()
        except OSError:
            pass
