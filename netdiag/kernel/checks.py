"""doctor's checks: what this kernel can do for netdiag, and how to fix what it cannot.

Each check says which netdiag features it enables and whether netdiag's core needs it. The
checks live by subject (checks_bpf: BPF tracing; checks_host: network and limits); what they
take and return is in check_context. This module is doctor's entry: every check in order,
run so that one broken check cannot hide the others, and the core verdict.
"""

from __future__ import annotations

from collections.abc import Callable

from netdiag.kernel.check_context import DEFAULT_HOOKS, Check, Context, HookNeed, LiveTrials
from netdiag.kernel.checks_bpf import (
    bcc_attach,
    bcc_module,
    btf,
    cgroup_sockops,
    header_tree,
    kernel_version,
    kprobes,
    lockdown,
    tracefs_mount,
    tracepoints,
    unprivileged_bpf,
)
from netdiag.kernel.checks_host import (
    capabilities,
    congestion_control,
    nofile,
    qdiscs,
    sock_diag,
    tun,
)

# doctor's API: the checks' types, and running them
__all__ = [
    "ALL",
    "DEFAULT_HOOKS",
    "Check",
    "Context",
    "HookNeed",
    "LiveTrials",
    "core_fix",
    "core_missing",
    "core_ok",
    "run_all",
]

ALL: list[Callable[[Context], Check | list[Check]]] = [
    kernel_version,
    btf,
    tracefs_mount,
    bcc_module,
    header_tree,
    bcc_attach,
    tracepoints,
    kprobes,
    cgroup_sockops,
    congestion_control,
    qdiscs,
    tun,
    sock_diag,
    capabilities,
    unprivileged_bpf,
    lockdown,
    nofile,
]


def run_all(ctx: Context) -> list[Check]:
    out: list[Check] = []
    for fn in ALL:
        try:
            res = fn(ctx)
        except Exception as e:  # one broken check must not hide the others
            res = Check(
                fn.__name__,
                "missing",
                f"check failed: {type(e).__name__}: {e}",
                "unknown",
                "run with --debug and report it",
                core=True,  # a broken check cannot vouch for the core
            )
        out += res if isinstance(res, list) else [res]
    return out


def core_ok(checks: list[Check]) -> bool:
    """Core features work when no core check is missing (degraded = works, with a caveat)."""
    return not core_missing(checks)


def core_missing(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.core and c.status == "missing"]


def core_fix(missing: list[Check]) -> str:
    """One line for the error: the capabilities to grant, else the first check's fix."""
    caps_needed = [c.name for c in missing if c.name.startswith("CAP_")]
    if caps_needed:
        return f"run as root (netdiag needs {', '.join(caps_needed)})"
    return missing[0].fix or "see the table"
