"""Socket filters. Ports are compiled into the kernel half (-D); PID, cgroup and network
namespace cannot be decided in softirq context (tcp_probe runs on whatever task is current),
so they are decided in user space when the map is read (netdiag/trace/membership.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from netdiag.errors import InputError
from netdiag.trace.decode import Row
from netdiag.trace.membership import Membership, cgroup_ids, check_netns, check_pids

KERNEL_PORTS = 2  # netdiag.h compares against FILTER_PORT and FILTER_PORT2

__all__ = ["KERNEL_PORTS", "Filters", "cgroup_ids"]


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

    def check(self) -> None:
        """Refuse PIDs and namespaces that do not exist (the cgroup is checked on resolve)."""
        check_pids(self.pids)
        if self.netns is not None:
            check_netns(self.netns)

    @property
    def by_owner(self) -> bool:
        return bool(self.pids or self.cgroup or self.netns)

    def kernel_ports(self) -> tuple[int, ...]:
        """Ports the kernel half filters on; more than two are filtered in user space instead."""
        return self.ports if len(self.ports) <= KERNEL_PORTS else ()

    def keep(self, row: Row) -> bool:
        if not self.ports:
            return True
        ports = (row.get("lport"), row.get("rport"), row.get("port"))  # port: a service port
        return any(p in self.ports for p in ports if p is not None)

    def membership(self) -> Membership:
        return Membership(self.pids, self.cgroup, self.netns)
