"""RLIMIT_NOFILE of a running process, through psutil's prlimit(2) wrapper.

A process is named by (pid, create_time) so a revert never touches a reused PID."""

from __future__ import annotations

import resource

import psutil

from netdiag.errors import InputError, PrivilegeError
from netdiag.kernel import sysctl
from netdiag.kernel.host import REAL, HostPaths

NR_OPEN = "fs.nr_open"


def identify(pid: int) -> tuple[float, str]:
    """(create_time, name) of a live process, or an InputError that names the gone PID."""
    try:
        p = psutil.Process(pid)
        return p.create_time(), p.name()
    except psutil.NoSuchProcess:
        raise InputError(
            f"no process {pid}", "check the PID with `ps`; it may have exited"
        ) from None


def get(pid: int, create_time: float) -> tuple[int, int] | None:
    """(soft, hard) RLIMIT_NOFILE of the process, None if it is gone (or the PID was reused)."""
    try:
        p = psutil.Process(pid)
        if abs(p.create_time() - create_time) > 0.01:
            return None
        soft, hard = p.rlimit(resource.RLIMIT_NOFILE)
        return int(soft), int(hard)
    except psutil.NoSuchProcess:
        return None
    except psutil.AccessDenied as e:
        raise PrivilegeError(
            f"reading RLIMIT_NOFILE of pid {pid} needs CAP_SYS_RESOURCE (or its own user)",
            "run as root",
        ) from e


def set_nofile(pid: int, create_time: float, soft: int, hard: int) -> None:
    if get(pid, create_time) is None:
        raise InputError(f"process {pid} is gone", "nothing to change; check the PID with `ps`")
    try:
        psutil.Process(pid).rlimit(resource.RLIMIT_NOFILE, (soft, hard))
    except psutil.AccessDenied as e:
        raise PrivilegeError(
            f"raising RLIMIT_NOFILE of pid {pid}: {e}", "run as root (CAP_SYS_RESOURCE)"
        ) from e
    except ValueError as e:
        raise InputError(
            f"RLIMIT_NOFILE {soft}/{hard} rejected for pid {pid}: {e}",
            f"stay at or below {NR_OPEN}",
        ) from e


def check_against_nr_open(n: int, host: HostPaths = REAL) -> int:
    nr_open = int(sysctl.read(NR_OPEN, None, host))
    if n < 1:
        raise InputError(f"--nofile {n} must be positive")
    if n > nr_open:
        raise InputError(
            f"--nofile {n} exceeds fs.nr_open ({nr_open}), the kernel's per-process ceiling",
            f"ask for at most {nr_open}, or raise it first: `netdiag tune --set fs.nr_open={n}`",
        )
    return nr_open
