"""cgroup v2 discovery and path validation (sockops programs attach to a v2 cgroup)."""

from __future__ import annotations

import os
from pathlib import Path

from netdiag.errors import InputError, KernelFeatureError
from netdiag.kernel.host import REAL, HostPaths, mounts

CGROUP2_SUPER_MAGIC = 0x63677270


def v2_root(host: HostPaths = REAL) -> Path:
    """Mount point of the cgroup v2 hierarchy (unified or hybrid layout)."""
    found = [Path(t) for _s, t, fs, _o in mounts(host) if fs == "cgroup2"]
    if not found:
        raise KernelFeatureError(
            "no cgroup v2 hierarchy is mounted",
            "mount one: `mkdir -p /sys/fs/cgroup/unified && "
            "mount -t cgroup2 none /sys/fs/cgroup/unified`",
        )
    # prefer the shortest (the root of the hierarchy)
    return min(found, key=lambda p: len(str(p)))


def resolve(path: str | Path, host: HostPaths = REAL) -> Path:
    """Absolute cgroup v2 directory for `path` (absolute, or relative to the v2 root)."""
    root = v2_root(host)
    p = Path(path)
    full = p if p.is_absolute() else root / p
    full = Path(os.path.normpath(full))
    if not (full == root or root in full.parents):
        raise InputError(
            f"{full} is not inside the cgroup v2 hierarchy at {root}", f"give a path under {root}"
        )
    if not (full / "cgroup.procs").exists():
        raise InputError(f"{full} is not a cgroup v2 directory", f"create it with `mkdir {full}`")
    return full


def of_pid(pid: int, host: HostPaths = REAL) -> Path:
    """The v2 cgroup directory that process `pid` belongs to."""
    try:
        text = (host.proc / str(pid) / "cgroup").read_text()
    except FileNotFoundError:
        raise InputError(f"no process {pid}", "check the PID with `ps`") from None
    for line in text.splitlines():
        hid, _ctrl, rel = line.split(":", 2)
        if hid == "0":
            return v2_root(host) / rel.lstrip("/")
    raise KernelFeatureError(f"process {pid} is in no cgroup v2", "mount cgroup v2")
