"""Congestion control: which algorithms the kernel offers and allows, and how to enable one.

The one source for doctor's congestion-control row (kernel/checks_host.py) and tune's --cc
(tune/plan.py, bench): both read the same sysctls and give the same fix for a missing one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from netdiag.errors import InputError, KernelFeatureError, NetdiagError
from netdiag.kernel import modules, sysctl
from netdiag.kernel.host import REAL, HostPaths

AVAILABLE = "net.ipv4.tcp_available_congestion_control"
ALLOWED = "net.ipv4.tcp_allowed_congestion_control"
DEFAULT = "net.ipv4.tcp_congestion_control"
# what tune's profiles and `bench cc` compare: doctor degrades when one is missing
USED = ("bbr", "cubic")
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


@dataclass(frozen=True)
class CcState:
    available: list[str]
    allowed: list[str]  # what a non-init namespace may choose (tune --netns, bench)
    default: str | None


def state(netns: str | None = None, host: HostPaths = REAL) -> CcState:
    """What the kernel offers, allows and uses now; an unreadable value is empty/None."""

    def get(key: str) -> str | None:
        try:
            return sysctl.read(key, netns, host)
        except NetdiagError:
            return None

    return CcState(
        (get(AVAILABLE) or "").split(), (get(ALLOWED) or "").split(), get(DEFAULT) or None
    )


def loadable(name: str, host: HostPaths = REAL) -> bool:
    """The kernel loads modules and tcp_NAME is installed: `modprobe` will bring it."""
    return modules.supported(host) and modules.installed(f"tcp_{name}", host)


def enable_fix(names: Sequence[str], host: HostPaths = REAL) -> str:
    """How to get these algorithms on this kernel: modprobe only where it can work."""
    mods = [f"tcp_{n}" for n in names]
    if all(loadable(n, host) for n in names):
        return f"modprobe {' '.join(mods)}"
    if modules.supported(host):
        return f"install and load {' '.join(mods)}"
    return modules.load_fix(*mods, host=host)


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
    if loadable(name, host):
        raise KernelFeatureError(
            f"congestion control {name!r} is not loaded (available: {' '.join(have)})",
            f"load it: `{enable_fix([name], host)}`, then retry",
        )
    raise KernelFeatureError(
        f"this kernel has no congestion control {name!r} (available: {' '.join(have)})",
        f"pick one of {', '.join(have)}, or {enable_fix([name], host)}",
    )
