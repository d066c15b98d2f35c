"""sysctl read/write through /proc/sys, namespace aware (net.* sysctls are per netns)."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

from netdiag.errors import InputError, NetdiagError, PrivilegeError
from netdiag.kernel import netns
from netdiag.kernel.host import REAL, HostPaths

CC_SYSCTL = "net.ipv4.tcp_congestion_control"
_NAME = re.compile(r"^[a-z0-9_\-]+(\.[a-zA-Z0-9_\-]+)+$")


def path_of(name: str, host: HostPaths = REAL) -> Path:
    if not _NAME.match(name):
        raise InputError(f"bad sysctl name {name!r}", "use the dotted form, e.g. net.core.rmem_max")
    return host.proc / "sys" / name.replace(".", "/")


def _normalize(value: str) -> str:
    # the kernel prints vectors tab-separated; accept any whitespace from users
    return " ".join(value.split())


def read(name: str, netns_name: str | None = None, host: HostPaths = REAL) -> str:
    p = path_of(name, host)

    def body() -> str:
        try:
            return _normalize(p.read_text())
        except FileNotFoundError:
            raise InputError(
                f"unknown sysctl {name}", f"this kernel has no {p}; check the name with `sysctl -a`"
            ) from None
        except PermissionError as e:
            raise PrivilegeError(f"reading {name}: {e}", "run as root") from e

    return netns.run_in(netns_name, body)


def write(
    name: str, value: str | int, netns_name: str | None = None, host: HostPaths = REAL
) -> None:
    p = path_of(name, host)
    text = _normalize(str(value))

    def body() -> None:
        if not p.exists():
            raise InputError(
                f"unknown sysctl {name}", f"this kernel has no {p}; check the name with `sysctl -a`"
            )
        try:
            with p.open("w") as f:
                f.write(text)
        except PermissionError as e:
            if name == CC_SYSCTL and netns_name is not None:
                # the kernel lets a non-init namespace pick only non-restricted algorithms
                raise InputError(
                    f"{name}={text!r} refused in namespace {netns_name}: {text} is restricted",
                    "add it to net.ipv4.tcp_allowed_congestion_control on the host first",
                ) from e
            raise PrivilegeError(
                f"writing {name}: {e}", "run as root; in a container /proc/sys may be read-only"
            ) from e
        except OSError as e:
            if e.errno == errno.EROFS:
                raise PrivilegeError(
                    f"{name} is read-only here",
                    "remount /proc/sys rw or run in a privileged container",
                ) from e
            if e.errno in (errno.EINVAL, errno.ERANGE):
                raise InputError(
                    f"{name}: kernel rejected value {text!r}", "check the range in the kernel docs"
                ) from e
            if e.errno == errno.ENOENT:
                raise InputError(f"{name}: kernel rejected value {text!r} (no such entry)") from e
            raise NetdiagError(f"writing {name}={text!r}: {e}") from e

    netns.run_in(netns_name, body)


def writable(name: str, netns_name: str | None = None, host: HostPaths = REAL) -> bool:
    """Whether this process may write `name` (False for read-only /proc/sys mounts and for
    host-wide sysctls a namespace can only read, e.g. net.core.rmem_max outside init_net)."""
    p = path_of(name, host)
    return netns.run_in(netns_name, lambda: p.exists() and os.access(p, os.W_OK))


def exists(name: str, netns_name: str | None = None, host: HostPaths = REAL) -> bool:
    p = path_of(name, host)
    return netns.run_in(netns_name, p.exists)


def netns_scoped(name: str, netns_name: str, host: HostPaths = REAL) -> bool:
    """Whether `name` is kept per network namespace, so writing it inside `netns_name`
    leaves the host alone. Entering a namespace switches only the network namespace:
    kernel.*, vm.*, fs.* keys are the host's (or another namespace type's) whatever it is.
    Of net.*, the kernel shows a namespace its own entries writable; host-wide ones are
    absent there or read-only (mode 0444, e.g. net.core.rmem_max) — judged by mode bits,
    not by this process's privileges."""
    if not name.startswith("net."):
        return False
    p = path_of(name, host)

    def probe() -> bool:
        try:
            return bool(p.stat().st_mode & 0o200)
        except OSError:
            return False

    return netns.run_in(netns_name, probe)


def write_capability(name: str) -> str:
    """What writing a sysctl takes: /proc/sys checks the owner's mode bits for euid 0; for
    net.* the network namespace's CAP_NET_ADMIN is enough."""
    if name.startswith("net."):
        return "root (euid 0) or CAP_NET_ADMIN"
    return "root (euid 0)"
