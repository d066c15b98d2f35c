"""One error hierarchy for all of netdiag (except netdiag.node, which stands alone).

Every error carries WHAT went wrong and HOW TO FIX it; the CLI prints them as
``netdiag: error: WHAT — HOW TO FIX`` and exits with the class's `ExitStatus`
(the table is README.md's "Errors and exit codes"; docs/cli.md lists it per command).
"""

from __future__ import annotations

import enum


class ExitStatus(enum.IntEnum):
    """The process exit codes netdiag documents; nothing else is ever returned."""

    OK = 0
    FAILED = 1  # the operation failed (or an internal error)
    USAGE = 2  # bad usage or bad input: nothing was changed
    PRIVILEGE = 3  # a privilege or capability is missing (the message names it)
    KERNEL_FEATURE = 4  # the running kernel lacks a feature
    CHECK_FAILED = 5  # a check or verification failed (doctor core, tune --verify worse)
    INTERRUPTED = 130  # Ctrl-C; kernel state netdiag created was removed


class NetdiagError(Exception):
    exit_code: ExitStatus = ExitStatus.FAILED

    def __init__(self, what: str, fix: str | None = None) -> None:
        super().__init__(what)
        self.what = what
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.what} — {self.fix}" if self.fix else self.what


class UsageError(NetdiagError):
    exit_code = ExitStatus.USAGE


class InputError(NetdiagError):
    """Malformed user input: a topology file, a sysctl name, a value out of range."""

    exit_code = ExitStatus.USAGE


class PrivilegeError(NetdiagError):
    exit_code = ExitStatus.PRIVILEGE


class KernelFeatureError(NetdiagError):
    exit_code = ExitStatus.KERNEL_FEATURE


class CheckFailed(NetdiagError):
    exit_code = ExitStatus.CHECK_FAILED
