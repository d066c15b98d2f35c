"""Socket filters. Ports are compiled into the kernel half (-D); PID, cgroup and network
namespace cannot be decided in softirq context (tcp_probe runs on whatever task is current),
so they are resolved to socket cookies through sock_diag and pushed into the probe's `allow`
map each interval."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from netdiag.errors import InputError
from netdiag.measure import owners, sockdiag
from netdiag.trace.decode import Row

KERNEL_PORTS = 2  # netdiag.h compares against FILTER_PORT and FILTER_PORT2


@dataclass(frozen=True)
class Filters:
    ports: tuple[int, ...] = ()
    pids: tuple[int, ...] = ()
    cgroup: Path | None = None
    netns: str | None = None

    def __post_init__(self) -> None:
        for p in self.ports:
            if not 0 < p < 65536:
                raise InputError(f"port {p} is out of range", "give ports 1-65535")

    @property
    def by_cookie(self) -> bool:
        return bool(self.pids or self.cgroup or self.netns)

    def kernel_ports(self) -> tuple[int, ...]:
        """Ports the kernel half filters on; more than two are filtered in user space instead."""
        return self.ports if len(self.ports) <= KERNEL_PORTS else ()

    def keep(self, row: Row) -> bool:
        if not self.ports:
            return True
        return row.get("lport") in self.ports or row.get("rport") in self.ports

    def allowed_cookies(
        self,
        snapshot: Callable[..., Iterable[sockdiag.TcpConn]] = sockdiag.snapshot,
        inodes_of: Callable[[int], set[int]] = owners.socket_inodes,
    ) -> set[int] | None:
        """Cookies of the sockets the PID / cgroup / netns filters select (None: no such filter)."""
        if not self.by_cookie:
            return None
        conns = list(snapshot(self.netns, states=(1 << 12) - 1, ports=self.ports))
        if self.pids:
            inodes: set[int] = set()
            for pid in self.pids:
                inodes |= inodes_of(pid)
            conns = [c for c in conns if c.inode in inodes]
        if self.cgroup is not None:
            ids = cgroup_ids(self.cgroup)
            conns = [c for c in conns if c.cgroup_id in ids]
        return {c.cookie for c in conns}


def cgroup_ids(root: Path) -> set[int]:
    """Ids of a cgroup v2 directory and all its descendants."""
    ids = {owners.cgroup_id(root)}
    for d, subdirs, _files in os.walk(root):
        ids |= {owners.cgroup_id(Path(d) / s) for s in subdirs}
    return ids
