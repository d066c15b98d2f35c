"""Named network namespaces: create, delete, run code inside, scratch namespaces that clean up.

setns(CLONE_NEWNET) changes only the calling thread, so `run_in` executes a function on a
short-lived thread that enters the namespace and dies with it — the caller's thread never moves.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import secrets
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from netdiag.errors import InputError, NetdiagError, PrivilegeError
from netdiag.kernel.host import REAL, HostPaths

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
# Every namespace netdiag creates starts with this, so `lab down --all` and cleanup never
# touch namespaces netdiag did not make.
PREFIX = "nd-"


def path_of(name: str, host: HostPaths = REAL) -> Path:
    if "/" in name or name in ("", ".", ".."):
        raise InputError(f"bad namespace name {name!r}", "use letters, digits, '-' and '_'")
    return host.run_netns / name


def exists(name: str, host: HostPaths = REAL) -> bool:
    return path_of(name, host).exists()


def list_names(host: HostPaths = REAL) -> list[str]:
    try:
        return sorted(p.name for p in host.run_netns.iterdir())
    except FileNotFoundError:
        return []


def create(name: str) -> None:
    from pyroute2 import netns as pr_netns

    try:
        pr_netns.create(name)
    except PermissionError as e:
        raise PrivilegeError(
            f"creating network namespace {name} needs CAP_SYS_ADMIN ({e})",
            "run as root (sudo netdiag …)",
        ) from e
    except FileExistsError as e:
        raise NetdiagError(f"netns {name} exists", f"remove it with `ip netns del {name}`") from e


def delete(name: str) -> None:
    from pyroute2 import netns as pr_netns

    if exists(name):
        pr_netns.remove(name)


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise PrivilegeError(
            f"entering a network namespace needs CAP_SYS_ADMIN (setns: {os.strerror(err)})",
            "run as root (sudo netdiag …)",
        )


def run_in(name: str | None, fn: Callable[[], T]) -> T:
    """Run fn() with the network namespace `name` (None: the caller's own, directly)."""
    if name is None:
        return fn()
    p = path_of(name)
    if not p.exists():
        raise InputError(f"network namespace {name!r} does not exist", "see `ip netns list`")
    box: dict[str, object] = {}

    def body() -> None:
        try:
            fd = os.open(p, os.O_RDONLY)
            try:
                _setns(fd)
            finally:
                os.close(fd)
            box["v"] = fn()
        except BaseException as e:
            box["e"] = e

    t = threading.Thread(target=body, name=f"netns:{name}")
    t.start()
    t.join()
    if "e" in box:
        raise box["e"]  # type: ignore[misc]
    return box["v"]  # type: ignore[return-value]


@contextlib.contextmanager
def scratch(tag: str = "scratch") -> Iterator[str]:
    """A throwaway namespace `nd-TAG-XXXX`, deleted on exit whatever happens."""
    name = f"{PREFIX}{tag}-{secrets.token_hex(3)}"
    create(name)
    try:
        yield name
    finally:
        delete(name)
