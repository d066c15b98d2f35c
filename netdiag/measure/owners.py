"""Which sockets belong to which process or cgroup (for the PID / cgroup filters)."""

from __future__ import annotations

import os
from pathlib import Path

from netdiag.kernel.host import REAL, HostPaths


def socket_inodes(pid: int, host: HostPaths = REAL) -> set[int]:
    """Inodes of the sockets process `pid` holds open (from /proc/PID/fd links)."""
    out: set[int] = set()
    fd_dir = host.proc / str(pid) / "fd"
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return out
    for n in names:
        try:
            target = os.readlink(fd_dir / n)
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(int(target[8:-1]))
    return out


def cgroup_id(path: Path) -> int:
    """A cgroup v2 directory's id: the inode number of the directory (what sock_diag reports)."""
    return path.stat().st_ino
