"""Socket workloads for `bench diagnose` that iperf3 cannot make: an idle connection, a slow
reader, a listener that never accepts and a client that floods it. Run inside a lab node:

    python -m netdiag.bench.diagnose_load server --port P --mode sink|slow|noaccept|hold
    python -m netdiag.bench.diagnose_load client --addr A --port P --mode send|idle|flood

Each runs until killed (the bench stops it) or for --seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import threading
import time

CHUNK = 64 * 1024


def _serve(args: argparse.Namespace) -> None:
    lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind((args.bind, args.port))
    lst.listen(args.backlog)
    end = time.monotonic() + args.seconds
    if args.mode == "noaccept":  # the accept queue fills; further SYNs overflow it
        time.sleep(max(0.0, end - time.monotonic()))
        return
    lst.settimeout(0.5)
    held: list[socket.socket] = []
    while time.monotonic() < end:
        try:
            conn, _ = lst.accept()
        except TimeoutError:
            continue
        held.append(conn)
        if args.mode in ("sink", "slow"):
            threading.Thread(target=_read, args=(conn, args, end), daemon=True).start()


def _read(conn: socket.socket, args: argparse.Namespace, end: float) -> None:
    # slow: read `rate` bytes/s in small reads, so the receive queue fills and the window closes
    step = 4096
    pause = step / args.rate if args.mode == "slow" and args.rate > 0 else 0.0
    with contextlib.suppress(OSError):
        while time.monotonic() < end:
            data = conn.recv(step if pause else CHUNK)
            if not data:
                conn.close()  # our FIN: the peer's socket reaches TIME_WAIT
                return
            if pause:
                time.sleep(pause)


def _client(args: argparse.Namespace) -> None:
    end = time.monotonic() + args.seconds
    if args.mode == "flood":  # more handshakes than the listener's backlog can hold
        socks = []
        for _ in range(args.conns):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError, OSError):
                s.connect((args.addr, args.port))
            socks.append(s)
            time.sleep(0.01)
        time.sleep(max(0.0, end - time.monotonic()))
        return
    s = socket.create_connection((args.addr, args.port), timeout=10)
    if args.cc:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, args.cc.encode())
    if args.mode == "idle":
        if args.prime:  # move some data first, so the idle socket has history
            s.sendall(b"x" * args.prime)
        time.sleep(max(0.0, end - time.monotonic()))
        return
    buf = b"x" * CHUNK
    s.settimeout(None)
    with contextlib.suppress(OSError):
        while time.monotonic() < end:
            s.send(buf)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="diagnose_load")
    p.add_argument("role", choices=["server", "client"])
    p.add_argument("--mode", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--bind", default="0.0.0.0")
    p.add_argument("--addr", default="127.0.0.1")
    p.add_argument("--backlog", type=int, default=128)
    p.add_argument("--rate", type=float, default=0.0, help="slow reader: bytes per second")
    p.add_argument("--conns", type=int, default=64)
    p.add_argument("--prime", type=int, default=0)
    p.add_argument("--cc", default="")
    p.add_argument("--seconds", type=float, default=60.0)
    args = p.parse_args(argv)
    (_serve if args.role == "server" else _client)(args)


if __name__ == "__main__":
    main()
