"""Before/after measurement for `tune --verify`: a bulk TCP transfer on a path, read out
through tcp_info (throughput, RTT, retransmits, and the time the sender spent limited by the
receive window, the send buffer, or its congestion window), and a verdict.

The path is a peer that discards what it receives (`--peer HOST:PORT`, e.g. a lab node), or
by default a sink netdiag opens on loopback inside the tuned scope (namespace, port).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from dataclasses import asdict, dataclass

from netdiag.errors import InputError, NetdiagError
from netdiag.kernel import netns

# struct tcp_info offsets (include/uapi/linux/tcp.h; stable, append-only ABI)
_OFF = {
    "rtt_us": (68, "I"),
    "rttvar_us": (72, "I"),
    "snd_cwnd": (80, "I"),
    "total_retrans": (100, "I"),
    "min_rtt_us": (148, "I"),
    "delivery_rate_Bps": (160, "Q"),
    "busy_us": (168, "Q"),
    "rwnd_limited_us": (176, "Q"),
    "sndbuf_limited_us": (184, "Q"),
    "bytes_acked": (120, "Q"),
    "bytes_sent": (200, "Q"),
    "bytes_retrans": (208, "Q"),
}
TCP_INFO_LEN = 232
WORSE_TOLERANCE = 0.05  # a throughput drop under 5 % is noise on a shared host


def tcp_info(sock: socket.socket) -> dict[str, int]:
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_LEN)
    return {
        k: struct.unpack_from(fmt, raw, off)[0] if len(raw) >= off + struct.calcsize(fmt) else 0
        for k, (off, fmt) in _OFF.items()
    }


@dataclass(frozen=True)
class Measurement:
    peer: str
    cc: str
    seconds: float
    bytes_sent: int
    throughput_bps: int
    rtt_us: int
    min_rtt_us: int
    retrans_segs: int
    bytes_retrans: int
    busy_us: int
    rwnd_limited_us: int
    sndbuf_limited_us: int
    cwnd_limited_us: int
    delivery_rate_bps: int

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def parse_peer(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise InputError(f"bad peer {text!r}", "write HOST:PORT, e.g. 10.9.0.2:9000")
    return host.strip("[]"), int(port)


def _sink(ns: str | None, port: int) -> tuple[socket.socket, int]:
    def make() -> socket.socket:
        if ns is not None:  # a fresh namespace's loopback is down
            import subprocess

            subprocess.run(["ip", "link", "set", "lo", "up"], check=False, capture_output=True)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            s.close()
            raise InputError(
                f"cannot open the verify sink on 127.0.0.1:{port}: {e}",
                "free the port or give --peer HOST:PORT",
            ) from e
        s.listen(4)
        return s

    srv = netns.run_in(ns, make)
    return srv, srv.getsockname()[1]


def _drain(srv: socket.socket, stop: threading.Event) -> None:
    srv.settimeout(0.5)
    conns = []
    while not stop.is_set():
        try:
            c, _ = srv.accept()
        except (TimeoutError, OSError):
            continue
        conns.append(c)
        threading.Thread(target=_discard, args=(c,), daemon=True).start()
    for c in conns:
        with contextlib.suppress(OSError):
            c.close()


def _discard(c: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while c.recv(1 << 20):
            pass


def measure(peer: str | None, seconds: float, ns: str | None = None, port: int = 0) -> Measurement:
    """Send as fast as TCP allows for `seconds` to peer (or a loopback sink) and read tcp_info."""
    stop = threading.Event()
    srv = None
    if peer is None:
        srv, port = _sink(ns, port)
        host = "127.0.0.1"
        threading.Thread(target=_drain, args=(srv, stop), daemon=True).start()
    else:
        host, port = parse_peer(peer)
    try:
        sock = netns.run_in(ns, lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        sock.settimeout(10)
        try:
            sock.connect((host, port))
        except OSError as e:
            raise NetdiagError(
                f"verify: cannot connect to {host}:{port}: {e}",
                "start a discard sink there or omit --peer",
            ) from e
        cc_name = (
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).rstrip(b"\0").decode()
        )
        buf = b"\0" * (1 << 16)
        t0 = time.monotonic()
        deadline = t0 + seconds
        with contextlib.suppress(TimeoutError):
            while time.monotonic() < deadline:
                sock.send(buf)
        info = tcp_info(sock)
        elapsed = time.monotonic() - t0
        sock.close()
    finally:
        stop.set()
        if srv is not None:
            srv.close()
    busy = info["busy_us"]
    limited = info["rwnd_limited_us"] + info["sndbuf_limited_us"]
    return Measurement(
        peer=f"{host}:{port}",
        cc=cc_name,
        seconds=round(elapsed, 3),
        bytes_sent=info["bytes_sent"],
        # goodput: bytes the peer acknowledged (bytes_sent also counts retransmissions)
        throughput_bps=int(info["bytes_acked"] * 8 / elapsed) if elapsed > 0 else 0,
        rtt_us=info["rtt_us"],
        min_rtt_us=info["min_rtt_us"],
        retrans_segs=info["total_retrans"],
        bytes_retrans=info["bytes_retrans"],
        busy_us=busy,
        rwnd_limited_us=info["rwnd_limited_us"],
        sndbuf_limited_us=info["sndbuf_limited_us"],
        cwnd_limited_us=max(0, busy - limited),
        delivery_rate_bps=info["delivery_rate_Bps"] * 8,
    )


@dataclass(frozen=True)
class Verdict:
    before: Measurement
    after: Measurement
    throughput_ratio: float
    verdict: str  # better | same | worse | unmeasured
    why: str

    def to_json(self) -> dict[str, object]:
        return {
            "before": self.before.to_json(),
            "after": self.after.to_json(),
            "throughput_ratio": self.throughput_ratio,
            "verdict": self.verdict,
            "why": self.why,
        }


def judge(before: Measurement, after: Measurement) -> Verdict:
    if not before.throughput_bps:  # nothing moved before: no ratio to judge by
        return Verdict(before, after, 0.0, "unmeasured", "no throughput measured before the change")
    ratio = after.throughput_bps / before.throughput_bps
    if ratio < 1 - WORSE_TOLERANCE:
        v, why = "worse", f"throughput fell to {ratio:.3g}× of before"
    elif ratio > 1 + WORSE_TOLERANCE:
        v, why = "better", f"throughput rose to {ratio:.3g}× of before"
    else:
        v, why = "same", f"throughput within ±{WORSE_TOLERANCE:.0%} ({ratio:.2f}×)"
    return Verdict(before, after, round(ratio, 3), v, why)


def bdp_from(m: Measurement) -> int:
    """BDP estimate of a measured path: delivery rate × min RTT."""
    return m.delivery_rate_bps * m.min_rtt_us // 8 // 1_000_000
