"""Sample the kernel over a window: sock_diag (tcp_info, bbr_info, skmem) for connections and
listeners, plus the namespace's TCP counters (ListenOverflows …) before and after."""

from __future__ import annotations

import ipaddress
import os
import socket
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from netdiag.diagnose.window import Sample
from netdiag.errors import InputError
from netdiag.kernel import netns
from netdiag.measure import owners, sockdiag

LISTEN_STATE = 1 << 10
ESTABLISHED_STATE = 1 << 1
MIN_INTERVAL_S = 0.05
MAX_SAMPLES = 40


@dataclass(frozen=True)
class Peer:
    addr: str
    port: int | None

    def matches(self, c: sockdiag.TcpConn) -> bool:
        return c.raddr == self.addr and (self.port is None or c.rport == self.port)


def parse_peer(text: str) -> Peer:
    """ADDR, ADDR:PORT, [V6ADDR]:PORT or a bare IPv6 address (a host name is resolved)."""
    t = text.strip()
    host, port_text = t, ""
    if t.startswith("["):
        close = t.find("]")
        if close < 0:
            raise InputError(
                f"--peer {text!r} has no closing ']'", "e.g. --peer [2001:db8::1]:30303"
            )
        host, rest = t[1:close], t[close + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise InputError(f"--peer {text!r} is not [ADDR]:PORT", "e.g. --peer [::1]:30303")
            port_text = rest[1:]
            if not port_text:
                raise InputError(f"--peer {text!r} has an empty port", "e.g. --peer [::1]:30303")
    elif t.count(":") == 1:
        host, port_text = t.split(":")
        if not port_text:
            raise InputError(f"--peer {text!r} has an empty port", "e.g. --peer 10.0.0.2:30303")
    port: int | None = None
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise InputError(
                f"--peer {text!r}: port {port_text!r} is not a number 1-65535",
                "write ADDR or ADDR:PORT, e.g. --peer 10.0.0.2:30303",
            )
        port = int(port_text)
    if not host:
        raise InputError(f"--peer {text!r} has no address", "e.g. --peer 10.0.0.2:30303")
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        try:
            info = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError):
            raise InputError(
                f"--peer {text!r}: {host!r} is not an address or a known host name",
                "give an IPv4/IPv6 address, e.g. --peer 10.0.0.2:30303",
            ) from None
        addr = ipaddress.ip_address(info[0][4][0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    return Peer(str(addr), port)


@dataclass(frozen=True)
class Selection:
    """Which sockets to judge. Empty: every TCP socket of the namespace."""

    ports: tuple[int, ...] = ()
    peer: Peer | None = None
    pids: tuple[int, ...] = ()
    cgroup: Path | None = None
    netns: str | None = None

    def validate(self) -> None:
        """Refuse what names nothing (exit 2), before any sampling."""
        for p in self.ports:
            if not 0 < p < 65536:
                raise InputError(f"--port {p} is out of range", "give ports 1-65535")
        for pid in self.pids:
            if pid < 1 or not Path(f"/proc/{pid}").is_dir():
                raise InputError(f"no process with pid {pid}", "check it with `ps -p PID`")
        if self.cgroup is not None and not self.cgroup.is_dir():
            raise InputError(
                f"cgroup {self.cgroup} does not exist",
                "give a cgroup v2 directory, e.g. /sys/fs/cgroup/unified/system.slice/x.service",
            )
        if self.netns is not None and not netns.exists(self.netns):
            raise InputError(
                f"network namespace {self.netns!r} does not exist", "see `ip netns list`"
            )


@dataclass
class Collected:
    conns: dict[int, list[Sample]] = field(default_factory=dict)
    listeners: dict[int, list[Sample]] = field(default_factory=dict)
    counters_before: dict[str, int] = field(default_factory=dict)
    counters_after: dict[str, int] = field(default_factory=dict)
    window_s: float = 0.0

    def counter_delta(self, name: str) -> int:
        return self.counters_after.get(name, 0) - self.counters_before.get(name, 0)


def read_counters(netns_name: str | None) -> dict[str, int]:
    """TcpExt + Tcp counters of a namespace (/proc/net/netstat and /proc/net/snmp)."""

    def body() -> dict[str, int]:
        out: dict[str, int] = {}
        # thread-self: /proc/self/net is the main thread's namespace, not this thread's
        for name in ("netstat", "snmp"):
            try:
                lines = Path(f"/proc/thread-self/net/{name}").read_text().splitlines()
            except OSError:
                continue
            for head, vals in zip(lines[::2], lines[1::2], strict=False):
                keys, nums = head.split()[1:], vals.split()[1:]
                prefix = head.split(":")[0]
                for k, v in zip(keys, nums, strict=False):
                    try:
                        out[f"{prefix}.{k}"] = int(v)
                    except ValueError:
                        continue
        return out

    return netns.run_in(netns_name, body)


def _keep(
    sel: Selection, inodes: set[int] | None, cg_ids: set[int] | None
) -> Callable[[sockdiag.TcpConn], bool]:
    def keep(c: sockdiag.TcpConn) -> bool:
        if sel.ports and c.lport not in sel.ports and c.rport not in sel.ports:
            return False
        if sel.peer is not None and not sel.peer.matches(c):
            return False
        if inodes is not None and c.inode not in inodes:
            return False
        return not (cg_ids is not None and c.cgroup_id not in cg_ids)

    return keep


def _cgroup_ids(root: Path) -> set[int]:
    ids = {owners.cgroup_id(root)}
    for d, subdirs, _files in os.walk(root):
        ids |= {owners.cgroup_id(Path(d) / s) for s in subdirs}
    return ids


def collect(
    sel: Selection,
    window_s: float,
    *,
    interval_s: float = 0.1,
    snapshot: Callable[..., Iterable[sockdiag.TcpConn]] = sockdiag.snapshot,
    counters: Callable[[str | None], dict[str, int]] = read_counters,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    progress: Callable[[float], None] | None = None,
    on_sample: Callable[[float, sockdiag.TcpConn], None] | None = None,
) -> Collected:
    """Sample every selected socket every `interval_s` for `window_s` seconds."""
    interval = max(MIN_INTERVAL_S, interval_s, window_s / MAX_SAMPLES)
    cg_ids = _cgroup_ids(sel.cgroup) if sel.cgroup is not None else None
    out = Collected(counters_before=counters(sel.netns))
    conns: dict[int, list[Sample]] = defaultdict(list)
    listeners: dict[int, list[Sample]] = defaultdict(list)
    start = clock()
    deadline = start + window_s
    while True:
        t = clock()
        inodes: set[int] | None = None
        if sel.pids:
            inodes = set()
            for pid in sel.pids:
                inodes |= owners.socket_inodes(pid)
        keep = _keep(sel, inodes, cg_ids)
        for c in snapshot(sel.netns, states=ESTABLISHED_STATE | LISTEN_STATE):
            if not keep(c):
                continue
            (listeners if c.state == "LISTEN" else conns)[c.cookie].append(Sample(t, c))
            if on_sample is not None:
                on_sample(t, c)
        if progress is not None:
            progress(min(1.0, (t - start) / window_s) if window_s > 0 else 1.0)
        if t >= deadline:
            break
        sleep(min(interval, max(0.0, deadline - clock())))
    out.counters_after = counters(sel.netns)
    if listeners:
        # the listeners' own drop counters once more, after the namespace's: every overflow
        # ListenOverflows counted is then in some listener's sk_drops delta (listenq)
        t = clock()
        for c in snapshot(sel.netns, states=LISTEN_STATE):
            if c.cookie in listeners and keep(c):
                listeners[c.cookie].append(Sample(t, c))
    out.conns = dict(conns)
    out.listeners = dict(listeners)
    out.window_s = clock() - start
    return out
