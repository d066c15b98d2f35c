"""Real TCP traffic for probe tests and benchmarks: connected pairs across namespaces."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field

from netdiag.kernel import netns

SO_COOKIE = 57  # asm-generic/socket.h


def cookie_of(s: socket.socket) -> int:
    return int.from_bytes(s.getsockopt(socket.SOL_SOCKET, SO_COOKIE, 8), "little")


@dataclass
class Pair:
    """A connected client/server pair; a thread drains the server side (and echoes `?`)."""

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

    def wait_received(self, nbytes: int, timeout_s: float = 60) -> float:
        """Block until the server side has read `nbytes`; returns the time it took."""
        t0 = time.monotonic()
        while self.got[0] < nbytes:
            if time.monotonic() - t0 > timeout_s:
                raise TimeoutError(f"only {self.got[0]} of {nbytes} bytes arrived in {timeout_s} s")
            time.sleep(0.01)
        return time.monotonic() - t0

    def ping_pong(self, n: int = 3) -> None:
        """Small request/response exchanges (needs echo=True)."""
        for _ in range(n):
            self.client.sendall(b"?")
            if self.client.recv(1) != b"!":
                raise ConnectionError("echo failed")

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
    rcvbuf: int | None = None,
) -> Pair:
    """Listen in one namespace, connect from another (None: ours), accept, start draining.
    `rcvbuf` pins the server's SO_RCVBUF (set on the listener, inherited by the accepted
    socket) to make a receive-window-limited connection."""

    def listen() -> socket.socket:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.bind((host, port))
        s.listen()
        return s

    lst = netns.run_in(listen_ns, listen)
    p = lst.getsockname()[1]

    def connect() -> socket.socket:
        s = socket.socket()
        if cc:  # per socket: the host's default congestion control stays untouched
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, cc.encode())
        s.settimeout(30)
        s.connect((host, p))
        return s

    cli = netns.run_in(connect_ns, connect)
    srv, _ = lst.accept()
    lst.close()
    got = [0]

    def drain() -> None:
        while True:
            try:
                b = srv.recv(1 << 20)
            except OSError:
                return
            if not b:
                return
            got[0] += len(b)
            if echo and b.endswith(b"?"):
                srv.sendall(b"!")

    t = threading.Thread(target=drain, daemon=True)
    t.start()
    return Pair(cli, srv, p, t, got)


def nstat_abs(ns: str | None, counter: str) -> int:
    """A kernel SNMP counter's absolute value in a namespace, read with nstat."""
    cmd = ["nstat", "-az", counter]
    if ns:
        cmd = ["ip", "netns", "exec", ns, *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0] == counter:
            return int(parts[1])
    return 0
