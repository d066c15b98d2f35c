"""Listening sockets for `trace-peers --listen`: accept-queue depth and backlog per listener
(sock_diag: for a LISTEN socket idiag_rqueue is the accept queue, idiag_wqueue the backlog),
each listener's own listen drops (skmem `d`: tcp_listendrop() increments the listener's
sk_drops next to TcpExt.ListenDrops, so a rising count names the listener that drops), and the
namespace's ListenOverflows / ListenDrops counters."""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass

from netdiag.kernel import netns
from netdiag.measure.sockdiag import EXT_SKMEMINFO, addr_text, join_hostport, skmem_from
from netdiag.trace.decode import Row

LISTEN_STATE = 1 << 10


@dataclass(frozen=True)
class Listener:
    cookie: int
    family: int
    laddr: str
    lport: int
    accept_queue: int
    backlog: int
    inode: int
    cgroup_id: int | None
    drops: int | None = None  # the listener's sk_drops since it was created (None: no skmem)

    def row(self) -> Row:
        return {
            "sock_cookie": self.cookie,
            "family": self.family,
            "laddr": self.laddr,
            "lport": self.lport,
            "raddr": None,
            "rport": None,
            "peer": f"listen {join_hostport(self.laddr, self.lport)}",
            "state": "LISTEN",
            "accept_queue": self.accept_queue,
            "accept_backlog": self.backlog,
            "listen_drops": self.drops,
            "from_sock_diag": True,
        }


def _query() -> list[Listener]:
    from netdiag.measure import inetdiag

    out: list[Listener] = []
    for msg in inetdiag.dump((socket.AF_INET, socket.AF_INET6), LISTEN_STATE, EXT_SKMEMINFO):
        cg = msg.get_attr("INET_DIAG_CGROUP_ID")
        mem = skmem_from(msg.get_attr("INET_DIAG_SKMEMINFO"))
        out.append(
            Listener(
                cookie=int(msg["idiag_cookie"]),
                family=int(msg["idiag_family"]),
                laddr=addr_text(msg["idiag_src"]),
                lport=int(msg["idiag_sport"]),
                accept_queue=int(msg["idiag_rqueue"]),
                backlog=int(msg["idiag_wqueue"]),
                inode=int(msg["idiag_inode"]),
                cgroup_id=int(cg) if cg is not None else None,
                drops=mem.drops if mem is not None else None,
            )
        )
    return out


def listeners(netns_name: str | None) -> list[Listener]:
    return netns.run_in(netns_name, _query)


def parse_netstat(text: str) -> dict[str, int]:
    """/proc/net/netstat: pairs of header/value lines -> {"TcpExtListenOverflows": n, ...}."""
    out: dict[str, int] = {}
    lines = text.splitlines()
    for head, vals in zip(lines[::2], lines[1::2], strict=False):
        hk, _, names = head.partition(":")
        _, _, values = vals.partition(":")
        for n, v in zip(names.split(), values.split(), strict=False):
            if v.lstrip("-").isdigit():
                out[f"{hk}{n}"] = int(v)
    return out


def _netstat() -> dict[str, int]:
    # thread-self: the namespace of the thread run_in moved, not the process's
    with open("/proc/thread-self/net/netstat") as f:
        return parse_netstat(f.read())


def overflow_counters(netns_name: str | None) -> dict[str, int]:
    c = netns.run_in(netns_name, _netstat)
    return {
        "listen_overflows": c.get("TcpExtListenOverflows", 0),
        "listen_drops": c.get("TcpExtListenDrops", 0),
    }


class OverflowDelta:
    """ListenOverflows / ListenDrops of the namespace: total and since the previous read."""

    def __init__(
        self, netns_name: str | None, read: Callable[[str | None], dict[str, int]] | None = None
    ) -> None:
        self.netns_name = netns_name
        self.read = read or overflow_counters
        self.prev = self.read(netns_name)

    def sample(self) -> dict[str, int]:
        cur = self.read(self.netns_name)
        out = {f"{k}_total": v for k, v in cur.items()}
        out.update({f"{k}_delta": v - self.prev.get(k, 0) for k, v in cur.items()})
        self.prev = cur
        return out
