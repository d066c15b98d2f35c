#!/usr/bin/env python3
"""Load for measuring a probe's cost by event rate (docs/probes/*.md OVERHEAD).

    scripts/probe_load.py MODE SECONDS [PORT]

MODE: idle | pingpong (small request/response on one loopback connection) | bulk (one
loopback connection sending as fast as it can) | churn (connect, send 100 bytes, close, in a
loop) | refused (connect to a closed port in a loop: one reset each way).
Prints one JSON line with what it did. Run it next to
`netdiag probes run NAME --json --interval S --count 1` (or `trace-peers --json`) and read
`bpf_runs_per_s`, `bpf_ns_per_event` and `bpf_cpu_pct` from the probe's line.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time


def _server(port: int, echo: bool) -> socket.socket:
    lst = socket.socket()
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind(("127.0.0.1", port))
    lst.listen(128)

    def serve(c: socket.socket) -> None:
        with c:
            while b := c.recv(1 << 16):
                if echo:
                    c.sendall(b[:1])

    def accept() -> None:
        while True:
            try:
                c, _ = lst.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(c,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return lst


def main() -> int:
    mode, seconds = sys.argv[1], float(sys.argv[2])
    port = int(sys.argv[3]) if len(sys.argv) > 3 else 5399
    end = time.monotonic() + seconds
    n = 0
    if mode == "idle":
        time.sleep(seconds)
    elif mode in ("pingpong", "bulk"):
        lst = _server(port, echo=mode == "pingpong")
        c = socket.create_connection(("127.0.0.1", port))
        buf = b"x" * (1 << 16)
        while time.monotonic() < end:
            if mode == "pingpong":
                c.sendall(b"?")
                c.recv(1)
                n += 1
            else:
                c.sendall(buf)
                n += len(buf)
        c.close()
        lst.close()
    elif mode == "churn":
        lst = _server(port, echo=False)
        while time.monotonic() < end:
            with socket.create_connection(("127.0.0.1", port)) as c:
                c.sendall(b"x" * 100)
            n += 1
        lst.close()
    elif mode == "refused":
        while time.monotonic() < end:
            with socket.socket() as s:
                try:
                    s.connect(("127.0.0.1", port))
                except ConnectionRefusedError:
                    n += 1
    else:
        print(f"unknown mode {mode}", file=sys.stderr)
        return 2
    print(json.dumps({"mode": mode, "seconds": seconds, "count": n, "per_s": round(n / seconds)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
