"""The BPF filesystem: find it, mount it at /sys/fs/bpf when missing (pins live there)."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from netdiag.errors import PrivilegeError
from netdiag.kernel.host import REAL, HostPaths, mounts

DEFAULT = Path("/sys/fs/bpf")


def mountpoint(host: HostPaths = REAL) -> Path | None:
    found = [Path(t) for _s, t, fs, _o in mounts(host) if fs == "bpf"]
    if DEFAULT in found:
        return DEFAULT
    return found[0] if found else None


def ensure(host: HostPaths = REAL) -> Path:
    """Return a bpffs mount, mounting one at /sys/fs/bpf if none is mounted."""
    found = mountpoint(host)
    if found is not None:
        return found
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"bpf", str(DEFAULT).encode(), b"bpf", 0, None) != 0:
        err = ctypes.get_errno()
        raise PrivilegeError(
            f"cannot mount bpffs on {DEFAULT}: {os.strerror(err)}",
            "run as root (CAP_SYS_ADMIN) or `mount -t bpf bpf /sys/fs/bpf`",
        )
    return DEFAULT
