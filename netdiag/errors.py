"""One error hierarchy for all of netdiag (except netdiag.node, which stands alone).

Every error carries WHAT went wrong and HOW TO FIX it; the CLI prints them as
``netdiag: error: WHAT — HOW TO FIX`` and exits with the class's code.

Exit codes (documented in README.md):
  0  success
  1  operation failed (NetdiagError)
  2  bad usage or bad input (UsageError, InputError)
  3  missing privilege or capability (PrivilegeError)
  4  the running kernel lacks a feature (KernelFeatureError)
  5  a check or verification failed (CheckFailed: doctor core missing, tune verify worse)
  130 interrupted (Ctrl-C); state netdiag created has been cleaned up
"""

from __future__ import annotations


class NetdiagError(Exception):
    exit_code = 1

    def __init__(self, what: str, fix: str | None = None) -> None:
        super().__init__(what)
        self.what = what
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.what} — {self.fix}" if self.fix else self.what


class UsageError(NetdiagError):
    exit_code = 2


class InputError(NetdiagError):
    """Malformed user input: a topology file, a sysctl name, a value out of range."""

    exit_code = 2


class PrivilegeError(NetdiagError):
    exit_code = 3


class KernelFeatureError(NetdiagError):
    exit_code = 4


class CheckFailed(NetdiagError):
    exit_code = 5


EXIT_INTERRUPTED = 130
