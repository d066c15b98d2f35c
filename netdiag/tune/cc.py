"""Congestion control names the kernel offers, and a clear error for ones it does not."""

from __future__ import annotations

import re

from netdiag.errors import InputError, KernelFeatureError
from netdiag.kernel import modules, sysctl
from netdiag.kernel.host import REAL, HostPaths

AVAILABLE = "net.ipv4.tcp_available_congestion_control"
ALLOWED = "net.ipv4.tcp_allowed_congestion_control"
DEFAULT = "net.ipv4.tcp_congestion_control"
_NAME = re.compile(r"^[a-z0-9_]{1,15}$")  # TCP_CA_NAME_MAX is 16 with the NUL
# the algorithms mainline Linux ships (net/ipv4/tcp_*.c with tcp_register_congestion_control)
LINUX_CCS = frozenset(
    [
        "bbr",
        "bic",
        "cdg",
        "cubic",
        "dctcp",
        "highspeed",
        "htcp",
        "hybla",
        "illinois",
        "lp",
        "nv",
        "reno",
        "scalable",
        "vegas",
        "veno",
        "westwood",
        "yeah",
    ]
)


def available(netns: str | None = None, host: HostPaths = REAL) -> list[str]:
    return sysctl.read(AVAILABLE, netns, host).split()


def allowed(netns: str | None = None, host: HostPaths = REAL) -> list[str]:
    return sysctl.read(ALLOWED, netns, host).split()


def require(name: str, netns: str | None = None, host: HostPaths = REAL) -> str:
    """`name` if the kernel offers it now; else an error that says how to get it: a name no
    Linux kernel has is bad input (exit 2, the available ones listed); a real algorithm this
    kernel lacks is a missing kernel feature (exit 4), with a fix that fits this kernel."""
    have = available(netns, host)
    if name in have:
        return name
    if not _NAME.match(name) or name not in LINUX_CCS:
        raise InputError(
            f"no congestion control named {name!r}",
            f"choose one this kernel offers: {', '.join(have)}",
        )
    module = f"tcp_{name}"
    if modules.supported(host) and modules.installed(module, host):
        raise KernelFeatureError(
            f"congestion control {name!r} is not loaded (available: {' '.join(have)})",
            f"load it: `modprobe {module}`, then retry",
        )
    raise KernelFeatureError(
        f"this kernel has no congestion control {name!r} (available: {' '.join(have)})",
        f"pick one of {', '.join(have)}, or "
        + (
            f"install and load {module}"
            if modules.supported(host)
            else modules.load_fix(module, host=host)
        ),
    )
