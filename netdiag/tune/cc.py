"""Congestion control names the kernel offers, and a clear error for ones it does not."""

from __future__ import annotations

import re

from netdiag.errors import InputError, KernelFeatureError
from netdiag.kernel import sysctl
from netdiag.kernel.host import REAL, HostPaths

AVAILABLE = "net.ipv4.tcp_available_congestion_control"
ALLOWED = "net.ipv4.tcp_allowed_congestion_control"
DEFAULT = "net.ipv4.tcp_congestion_control"
_NAME = re.compile(r"^[a-z0-9_]{1,15}$")  # TCP_CA_NAME_MAX is 16 with the NUL


def available(netns: str | None = None, host: HostPaths = REAL) -> list[str]:
    return sysctl.read(AVAILABLE, netns, host).split()


def allowed(netns: str | None = None, host: HostPaths = REAL) -> list[str]:
    return sysctl.read(ALLOWED, netns, host).split()


def module_file(name: str, host: HostPaths = REAL) -> str | None:
    """The tcp_NAME module of the running kernel, if one is installed."""
    base = host.lib_modules / host.release() / "kernel/net/ipv4"
    for ext in (".ko", ".ko.xz", ".ko.zst", ".ko.gz"):
        p = base / f"tcp_{name}{ext}"
        if p.exists():
            return str(p)
    return None


def require(name: str, netns: str | None = None, host: HostPaths = REAL) -> str:
    """`name` if the kernel offers it now; else an error that says how to get it."""
    if not _NAME.match(name):
        raise InputError(
            f"bad congestion control name {name!r}", "use a kernel name such as bbr, cubic or reno"
        )
    have = available(netns, host)
    if name in have:
        return name
    if module_file(name, host):
        raise KernelFeatureError(
            f"congestion control {name!r} is not loaded (available: {' '.join(have)})",
            f"load it: `modprobe tcp_{name}`, then retry",
        )
    raise KernelFeatureError(
        f"this kernel has no congestion control {name!r} (available: {' '.join(have)}; "
        f"no tcp_{name} module under /lib/modules/{host.release()})",
        f"pick one of {', '.join(have)}, or boot a kernel with CONFIG_TCP_CONG_{name.upper()}",
    )
