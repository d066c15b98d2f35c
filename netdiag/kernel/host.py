"""Where the host's /proc and /sys live — passed in so unit tests can point at a fake tree."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class HostPaths:
    proc: Path = Path("/proc")
    sys: Path = Path("/sys")
    lib_modules: Path = Path("/lib/modules")
    usr_src: Path = Path("/usr/src")
    run_netns: Path = Path("/run/netns")

    def release(self) -> str:
        """Running kernel release (`uname -r`), from the (possibly fake) /proc tree."""
        p = self.proc / "sys/kernel/osrelease"
        try:
            return p.read_text().strip()
        except OSError:
            return os.uname().release


REAL = HostPaths()


def mounts(host: HostPaths = REAL) -> list[tuple[str, str, str, str]]:
    """(source, mountpoint, fstype, options) from /proc/self/mounts."""
    out = []
    try:
        text = (host.proc / "self/mounts").read_text()
    except OSError:
        return []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 4:
            out.append((parts[0], _unescape(parts[1]), parts[2], parts[3]))
    return out


def _unescape(path: str) -> str:
    # /proc/mounts escapes space, tab, newline and backslash as octal
    return (
        path.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
    )


def data_dir(name: str) -> Path:
    """bpf/ or probes/: beside the package in a checkout, else where the wheel installs them
    (PREFIX/share/netdiag/NAME, from pyproject's data-files)."""
    checkout = Path(__file__).resolve().parents[2] / name
    if checkout.is_dir():
        return checkout
    return Path(sys.prefix) / "share" / "netdiag" / name


def cache_dir() -> Path:
    if os.environ.get("NETDIAG_CACHE"):
        return Path(os.environ["NETDIAG_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "netdiag"


def state_dir() -> Path:
    """Where netdiag records kernel state it owns (labs, tune journal). Survives kill -9."""
    return Path(os.environ.get("NETDIAG_STATE", "/var/lib/netdiag"))


def mount_pseudo(fstype: str, target: Path) -> None:
    """mount -t FSTYPE FSTYPE TARGET (tracefs, bpf): netdiag mounts these when it needs them."""
    import ctypes

    from netdiag.errors import PrivilegeError

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(fstype.encode(), str(target).encode(), fstype.encode(), 0, None) != 0:
        err = ctypes.get_errno()
        raise PrivilegeError(
            f"cannot mount {fstype} on {target}: {os.strerror(err)}",
            f"run as root (CAP_SYS_ADMIN) or `mount -t {fstype} {fstype} {target}`",
        )
