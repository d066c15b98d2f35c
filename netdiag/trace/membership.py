"""Which probe rows a PID / cgroup / netns filter keeps, decided in user space at read time.

The kernel half counts every socket (ports aside) from the moment it sees it; membership is
decided when the map is read, from a sock_diag snapshot taken right then. A kernel allowlist
refreshed each interval (the old design) missed every new connection until the next refresh —
its whole first interval. Deciding afterwards loses nothing:

- a socket sock_diag still shows is judged by its owner (inode in /proc/PID/fd), its cgroup id,
  or its presence in the namespace; a yes is sticky, so the final report of a socket whose
  process already closed it (orphaned: inode 0) still counts;
- a socket that opened and closed between two reads is attributed from what the kernel half
  recorded at connect() (tgid and cgroup id: SYN_SENT runs in the caller's context), or, for a
  passive open, from the listener on its local port (a child inherits its listener's cgroup and
  is accepted by the listener's owner); for a netns, from the namespace's addresses.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from netdiag.errors import InputError
from netdiag.kernel import netns
from netdiag.measure import owners
from netdiag.measure.sockdiag import TcpConn
from netdiag.trace.decode import Row


def cgroup_ids(root: Path) -> set[int]:
    """Ids of a cgroup v2 directory and all its descendants."""
    ids = {owners.cgroup_id(root)}
    for d, subdirs, _files in os.walk(root):
        ids |= {owners.cgroup_id(Path(d) / s) for s in subdirs}
    return ids


def check_pids(pids: Iterable[int], proc: Path = Path("/proc")) -> None:
    """Refuse PIDs that name no process (a typo would otherwise show an empty table forever)."""
    for pid in pids:
        if pid <= 0 or not (proc / str(pid)).is_dir():
            raise InputError(f"--pid {pid}: no such process", "check the PID with `ps -e`")


def netns_of_pids(pids: Iterable[int], proc: Path = Path("/proc")) -> str | None:
    """The named namespace the processes' sockets live in (None: ours). A node of a lab runs
    in `nd-lab-…`: without this, `--pid` would look for its sockets in our namespace."""

    def ino(p: Path) -> int | None:
        try:
            return p.stat().st_ino
        except OSError:
            return None

    ours = ino(proc / "self/ns/net")
    found = {ino(proc / str(pid) / "ns/net") for pid in pids} - {None}
    if not found or found == {ours}:
        return None
    if len(found) > 1:
        raise InputError(
            "the --pid processes are in different network namespaces",
            "trace one namespace at a time (--netns NAME)",
        )
    (want,) = found
    for name in netns.list_names():
        if ino(netns.path_of(name)) == want:
            return name
    if ours is None:
        return None  # cannot tell (no access to /proc/self/ns): stay in ours
    raise InputError(
        "the --pid process is in an unnamed network namespace",
        "name it (`ip netns attach NAME PID`) and pass --netns NAME",
    )


def check_netns(name: str) -> None:
    if not netns.exists(name):
        raise InputError(
            f"--netns {name!r}: no such network namespace", "see `ip netns list` for the names"
        )


def netns_addresses(name: str | None) -> set[str]:
    """Local addresses of a network namespace (IPv4 and IPv6, as text)."""
    from pyroute2 import IPRoute

    def body() -> set[str]:
        with IPRoute() as ipr:
            return {str(a.get_attr("IFA_ADDRESS")) for a in ipr.get_addr()}

    return netns.run_in(name, body)


def _loopback(addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return False


@dataclass
class Membership:
    """Decides rows for the pid / cgroup / netns filters; `update(conns)` once per read."""

    pids: tuple[int, ...] = ()
    cgroup: Path | None = None
    netns: str | None = None
    inodes_of: Callable[[int], set[int]] = owners.socket_inodes
    addresses_of: Callable[[str | None], set[str]] = netns_addresses
    _yes: set[int] = field(default_factory=set)
    _seen: dict[int, TcpConn] = field(default_factory=dict)
    _listeners: list[TcpConn] = field(default_factory=list)
    _inodes: set[int] = field(default_factory=set)
    _cg_ids: set[int] = field(default_factory=set)
    _addrs: set[str] | None = None

    @property
    def active(self) -> bool:
        return bool(self.pids or self.cgroup or self.netns)

    def update(self, conns: Iterable[TcpConn]) -> None:
        """A sock_diag snapshot (all states, in the filter's namespace) taken at this read."""
        self._seen = {c.cookie: c for c in conns}
        self._listeners = [c for c in self._seen.values() if c.state == "LISTEN"]
        self._inodes = set()
        for pid in self.pids:
            self._inodes |= self.inodes_of(pid)
        self._cg_ids = cgroup_ids(self.cgroup) if self.cgroup is not None else set()
        self._addrs = None
        for cookie, c in self._seen.items():
            # an orphan (inode 0: its process closed it) has no owner left to ask about
            if (c.inode or not self.pids) and self._owned(c):
                self._yes.add(cookie)

    def _owned(self, c: TcpConn) -> bool:
        """A socket sock_diag shows (in the filter's namespace, since it was asked there)."""
        if self.pids and c.inode not in self._inodes:
            return False
        return not (self.cgroup is not None and c.cgroup_id not in self._cg_ids)

    def _listener_on(self, port: int) -> list[TcpConn]:
        return [c for c in self._listeners if c.lport == port]

    def _attributed(self, row: Row) -> bool:
        """A row sock_diag cannot judge (closed before the read, or orphaned)."""
        lport, rport = row.get("lport"), row.get("rport")
        listeners = self._listener_on(int(lport or 0))
        if self.netns is not None:
            if self._addrs is None:
                self._addrs = self.addresses_of(self.netns)
            laddr = str(row.get("laddr"))
            if laddr not in self._addrs:
                return False
            # 127.0.0.1 exists in every namespace: also need a listener of this one on an end
            if _loopback(laddr) and not (listeners or self._listener_on(int(rport or 0))):
                return False
        if self.pids:
            pid = int(row.get("open_pid") or 0)
            if pid:
                if pid not in self.pids:
                    return False
            elif not any(c.inode in self._inodes for c in listeners):
                return False
        if self.cgroup is not None:
            cg = int(row.get("open_cgroup") or 0)
            if cg:
                if cg not in self._cg_ids:
                    return False
            elif not any(c.cgroup_id in self._cg_ids for c in listeners):
                return False
        return True

    def keep(self, row: Row) -> bool:
        if not self.active:
            return True
        cookie = int(row.get("sock_cookie") or 0)
        if cookie in self._yes:
            return True
        c = self._seen.get(cookie)
        if c is not None and (c.inode or not self.pids):
            return False  # alive, and not ours
        if c is None and not row.get("closed_ns"):
            return False  # alive and not in the namespace sock_diag was asked about
        if self._attributed(row):
            self._yes.add(cookie)
            return True
        return False

    def forget(self, live: Iterable[int]) -> None:
        """Drop decisions for sockets that are gone (bounded memory)."""
        self._yes &= set(live)

    def allowed(self, conns: Iterable[TcpConn]) -> list[TcpConn]:
        """The snapshot's sockets the filter keeps (for rows seeded from sock_diag)."""
        return [c for c in conns if not self.active or c.cookie in self._yes]
