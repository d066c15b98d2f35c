"""The BPF filesystem: find it, mount it at /sys/fs/bpf when missing (pins live there)."""

from __future__ import annotations

from pathlib import Path

from netdiag.kernel.host import REAL, HostPaths, mount_pseudo, mounts

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
    mount_pseudo("bpf", DEFAULT)
    return DEFAULT
