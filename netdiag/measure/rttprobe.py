"""Active handshake RTT with scapy: SYN out, SYN-ACK back (the RTT), then RST so the peer
keeps no half-open state. For peers with no live connection to read tcp_info from."""

from __future__ import annotations

import logging
import random
import socket
import time
from dataclasses import dataclass

from netdiag.errors import InputError, NetdiagError, PrivilegeError
from netdiag.kernel import caps, netns

CAP_NET_RAW = 13  # linux/capability.h


@dataclass(frozen=True)
class ProbeResult:
    target: str
    sent: int
    answered: int
    rtt_us: list[float]
    refused: int  # RST answers (port closed): still an RTT sample

    @property
    def min_rtt_us(self) -> float | None:
        return min(self.rtt_us) if self.rtt_us else None


def parse_target(text: str) -> tuple[str, int]:
    """HOST:PORT, IPv4:PORT or [IPv6]:PORT -> (address, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or (":" in host and not host.startswith("[")):
        raise InputError(
            f"--probe {text!r} is not HOST:PORT", "e.g. --probe 10.0.0.2:30303 or [::1]:30303"
        )
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(
            f"--probe {text!r}: port {port!r} is not 1-65535", "e.g. --probe [::1]:30303"
        )
    host = host.strip("[]")
    try:
        addr = socket.getaddrinfo(host, int(port), 0, socket.SOCK_STREAM)[0][4][0]
    except (socket.gaierror, UnicodeError) as e:
        raise InputError(f"cannot resolve {host!r}: {e}", "give an IPv4 or IPv6 address") from e
    return str(addr), int(port)


def _fmt(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def handshake_rtt(
    target: str, count: int = 3, timeout_s: float = 1.0, netns_name: str | None = None
) -> ProbeResult:
    """Send `count` SYNs to HOST:PORT (from inside `netns_name`, if given) and time the
    SYN-ACK (or RST) answers."""
    parse_target(target)  # bad input is refused before any privilege or namespace question
    return netns.run_in(netns_name, lambda: _handshake_rtt(target, count, timeout_s))


def _handshake_rtt(target: str, count: int, timeout_s: float) -> ProbeResult:
    if not caps.effective() & (1 << CAP_NET_RAW):
        raise PrivilegeError(
            "sending raw SYN probes needs CAP_NET_RAW", "run as root (sudo netdiag bdp --probe …)"
        )
    host, port = parse_target(target)
    try:
        from scapy.config import conf
        from scapy.layers.inet import IP, TCP
        from scapy.layers.inet6 import IPv6
        from scapy.sendrecv import send, sr1
        from scapy.supersocket import L3RawSocket, L3RawSocket6
    except ImportError as e:
        raise NetdiagError(f"scapy does not import: {e}", "run `make setup`") from e
    conf.verb = 0
    # scapy logs unroutable sends as "ERROR: …" lines; an unanswered probe is our one error
    logging.getLogger("scapy").setLevel(logging.CRITICAL)
    # raw L3 sockets: the kernel routes (loopback included, and inside the caller's netns),
    # where scapy's own L2 path would use a routing table read in the root namespace
    conf.L3socket = L3RawSocket
    conf.L3socket6 = L3RawSocket6
    v6 = ":" in host
    rtts: list[float] = []
    refused = answered = 0
    for _ in range(count):
        sport = random.randint(40000, 60000)
        seq = random.getrandbits(32)
        net = IPv6(dst=host) if v6 else IP(dst=host)
        syn = net / TCP(sport=sport, dport=port, flags="S", seq=seq)
        t0 = time.perf_counter()
        ans = sr1(syn, timeout=timeout_s)
        t1 = time.perf_counter()
        if ans is None or not ans.haslayer(TCP):
            continue
        answered += 1
        flags = int(ans[TCP].flags)
        sent_time = float(getattr(syn, "sent_time", 0) or 0)
        rtt = (float(ans.time) - sent_time) if sent_time else (t1 - t0)
        rtts.append(round(rtt * 1e6, 1))
        if flags & 0x04:  # RST: port closed — the RTT still counts
            refused += 1
        elif flags & 0x12 == 0x12:
            rst = IPv6(dst=host) if v6 else IP(dst=host)
            send(rst / TCP(sport=sport, dport=port, flags="R", seq=seq + 1))
    return ProbeResult(_fmt(host, port), count, answered, rtts, refused)
