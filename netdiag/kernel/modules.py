"""Whether the running kernel can load modules, and a fix for a missing feature that fits it.

`modprobe X` is advice only for a kernel with module support (`/proc/modules` exists) that
has X installed; on a kernel built without modules (as on this project's VMs) the feature
comes only from a kernel built with its CONFIG_ option.
"""

from __future__ import annotations

from netdiag.kernel.host import REAL, HostPaths

# module -> the kernel config option that builds it in
CONFIG = {
    "sch_netem": "CONFIG_NET_SCH_NETEM",
    "sch_fq": "CONFIG_NET_SCH_FQ",
    "sch_htb": "CONFIG_NET_SCH_HTB",
    "sch_tbf": "CONFIG_NET_SCH_TBF",
    "tun": "CONFIG_TUN",
    "inet_diag": "CONFIG_INET_DIAG",
    "tcp_diag": "CONFIG_INET_TCP_DIAG",
}
_EXTS = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")


def supported(host: HostPaths = REAL) -> bool:
    """The kernel loads modules (CONFIG_MODULES): /proc/modules exists."""
    return (host.proc / "modules").exists()


def config_option(module: str) -> str:
    if module.startswith("tcp_") and module not in CONFIG:
        return f"CONFIG_TCP_CONG_{module[4:].upper()}"
    return CONFIG.get(module, f"the option that builds {module}")


def installed(module: str, host: HostPaths = REAL) -> bool:
    """A file for `module` under /lib/modules/$(uname -r) (any directory, any compression)."""
    base = host.lib_modules / host.release()
    if not base.is_dir():
        return False
    names = {module + ext for ext in _EXTS} | {module.replace("_", "-") + ext for ext in _EXTS}
    return any(p.name in names for p in base.rglob(f"{module[:3]}*"))


def load_fix(*mods: str, host: HostPaths = REAL) -> str:
    """How to get these modules on this kernel: `modprobe …` only where that can work."""
    if supported(host):
        return f"modprobe {' '.join(mods)}"
    opts = ", ".join(f"{config_option(m)}=y" for m in mods)
    return f"boot a kernel built with {opts} (this one cannot load modules)"
