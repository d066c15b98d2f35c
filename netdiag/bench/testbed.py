"""A three-namespace path for probe tests and benchmarks: client — router — server.

    nd-trace-PID-X-a  (198.18.0.1) ══ veth ══ router ══ veth ══ (198.18.0.6)  nd-trace-PID-X-b

Addresses come from 198.18.0.0/15 (RFC 2544 benchmarking) and exist only inside these
namespaces. An optional TBF on the router's egress toward the server makes real loss (the
sender sees retransmits; a qdisc drop on the sender's own host would only throttle it).
`gso_max_segs 1` on the client makes every skb one segment, so the retransmit tracepoint
(one event per skb) and the kernel's TcpRetransSegs (per segment) count the same thing.
Namespaces carry the creating PID, so `reap_stale()` removes those of a killed run.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

from netdiag.errors import NetdiagError
from netdiag.kernel import netns, sysctl

PREFIX = "nd-trace-"
CLIENT_IP = "198.18.0.1"
SERVER_IP = "198.18.0.6"
_NAME = re.compile(rf"^{PREFIX}(\d+)-[0-9a-f]+-[arb]$")


def _ip(*args: str) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise NetdiagError(f"`ip {' '.join(args)}` failed: {r.stderr.strip()}", "run as root")


def _tc(ns: str, *args: str) -> None:
    r = subprocess.run(["tc", "-n", ns, *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise NetdiagError(
            f"`tc {' '.join(args)}` failed: {r.stderr.strip()}", "is sch_tbf available?"
        )


@dataclass(frozen=True)
class Path3:
    client: str
    router: str
    server: str
    client_ip: str = CLIENT_IP
    server_ip: str = SERVER_IP

    def exec(self, ns: str, *cmd: str) -> list[str]:
        return ["ip", "netns", "exec", ns, *cmd]

    def set_rate(self, rate_mbit: float | None, limit_bytes: int = 20_000) -> None:
        """Shape (and drop) toward the server; None removes the shaper."""
        with contextlib.suppress(NetdiagError):
            _tc(self.router, "qdisc", "del", "dev", "rb", "root")
        if rate_mbit:
            _tc(
                self.router,
                "qdisc",
                "add",
                "dev",
                "rb",
                "root",
                "tbf",
                "rate",
                f"{rate_mbit}mbit",
                "burst",
                "16k",
                "limit",
                str(limit_bytes),
            )


def reap_stale() -> list[str]:
    """Delete nd-trace-* namespaces whose creating process is gone (after a kill -9)."""
    gone = []
    for name in netns.list_names():
        m = _NAME.match(name)
        if m and not os.path.exists(f"/proc/{m.group(1)}"):
            netns.delete(name)
            gone.append(name)
    return gone


@contextlib.contextmanager
def path3(rate_mbit: float | None = None, one_segment_skbs: bool = True) -> Iterator[Path3]:
    reap_stale()
    tag = f"{PREFIX}{os.getpid()}-{secrets.token_hex(2)}"
    p = Path3(f"{tag}-a", f"{tag}-r", f"{tag}-b")
    made: list[str] = []
    try:
        for n in (p.client, p.router, p.server):
            netns.create(n)
            made.append(n)
            _ip("-n", n, "link", "set", "lo", "up")
        _ip(
            "link",
            "add",
            "va",
            "netns",
            p.client,
            "type",
            "veth",
            "peer",
            "name",
            "ra",
            "netns",
            p.router,
        )
        _ip(
            "link",
            "add",
            "vb",
            "netns",
            p.server,
            "type",
            "veth",
            "peer",
            "name",
            "rb",
            "netns",
            p.router,
        )
        _ip("-n", p.client, "addr", "add", f"{CLIENT_IP}/30", "dev", "va")
        _ip("-n", p.router, "addr", "add", "198.18.0.2/30", "dev", "ra")
        _ip("-n", p.router, "addr", "add", "198.18.0.5/30", "dev", "rb")
        _ip("-n", p.server, "addr", "add", f"{SERVER_IP}/30", "dev", "vb")
        for ns, dev in ((p.client, "va"), (p.router, "ra"), (p.router, "rb"), (p.server, "vb")):
            _ip("-n", ns, "link", "set", dev, "up")
        _ip("-n", p.client, "route", "add", "default", "via", "198.18.0.2")
        _ip("-n", p.server, "route", "add", "default", "via", "198.18.0.5")
        sysctl.write("net.ipv4.ip_forward", 1, netns_name=p.router)
        if one_segment_skbs:
            _ip("-n", p.client, "link", "set", "dev", "va", "gso_max_segs", "1")
            _ip("-n", p.server, "link", "set", "dev", "vb", "gso_max_segs", "1")
        p.set_rate(rate_mbit)
        yield p
    finally:
        for n in reversed(made):
            with contextlib.suppress(Exception):
                netns.delete(n)
