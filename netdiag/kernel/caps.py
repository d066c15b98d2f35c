"""Linux capabilities of this process, from /proc/self/status (no libcap needed)."""

from __future__ import annotations

from netdiag.errors import PrivilegeError
from netdiag.kernel.host import REAL, HostPaths

# capability numbers from linux/capability.h
CAP_NUMBERS: dict[str, int] = {
    "CAP_NET_ADMIN": 12,
    "CAP_SYS_ADMIN": 21,
    "CAP_SYS_RESOURCE": 24,
    "CAP_PERFMON": 38,
    "CAP_BPF": 39,
}


def effective(host: HostPaths = REAL) -> int:
    for line in (host.proc / "self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def has(cap: str, host: HostPaths = REAL) -> bool:
    eff = effective(host)
    if cap in ("CAP_BPF", "CAP_PERFMON") and eff & (1 << CAP_NUMBERS["CAP_SYS_ADMIN"]):
        return True  # CAP_SYS_ADMIN implies both on kernels that predate them
    return bool(eff & (1 << CAP_NUMBERS[cap]))


def require(*caps: str, why: str, host: HostPaths = REAL) -> None:
    missing = [c for c in caps if not has(c, host)]
    if missing:
        raise PrivilegeError(
            f"{why} needs {', '.join(missing)}",
            "run as root (sudo netdiag …) or grant the capabilities to the process",
        )
