"""doctor's checks of what BPF tracing needs: kernel version, BTF, tracefs, bcc and headers,
a live compile+attach, each hooked tracepoint with its args, kprobes, cgroup sockops,
unprivileged BPF and lockdown."""

from __future__ import annotations

import functools
import os
import re

from netdiag.errors import NetdiagError
from netdiag.kernel import headers, tracefs
from netdiag.kernel.check_context import Check, Context, Status, read_proc, trial


def _version_tuple(release: str) -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", release)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def kernel_version(ctx: Context) -> Check:
    rel = ctx.host.release()
    v = _version_tuple(rel)
    if v >= (5, 8):
        return Check("kernel", "ok", rel, "everything (CAP_BPF, tcp_probe sock_cookie, bpf links)")
    return Check(
        "kernel",
        "degraded",
        f"{rel} is older than 5.8",
        "CAP_BPF split, BPF links",
        "upgrade to a 5.8+ kernel; netdiag runs as root meanwhile",
    )


def btf(ctx: Context) -> Check:
    if (ctx.host.sys / "kernel/btf/vmlinux").exists():
        return Check(
            "BTF", "ok", "/sys/kernel/btf/vmlinux present", "CO-RE programs, BTF-typed maps"
        )
    return Check(
        "BTF",
        "missing",
        "no /sys/kernel/btf/vmlinux",
        "CO-RE programs (future)",
        "boot a kernel with CONFIG_DEBUG_INFO_BTF=y; bcc works without it",
    )


def tracefs_mount(ctx: Context) -> Check:
    mp = tracefs.mountpoint(ctx.host)
    if mp is not None:
        return Check("tracefs", "ok", f"mounted at {mp}", "all tracepoint probes", core=True)
    return Check(
        "tracefs",
        "degraded",
        "not mounted (netdiag mounts it when it needs it)",
        "all tracepoint probes",
        "netdiag doctor --fix (mount -t tracefs tracefs /sys/kernel/tracing)",
        core=True,
    )


def bcc_module(ctx: Context) -> Check:
    try:
        import bcc  # noqa: F401
    except ImportError as e:
        return Check(
            "bcc module",
            "missing",
            f"import bcc failed: {e}",
            "all eBPF probes and sockops",
            "make setup (installs python3-bpfcc and links it into .venv)",
            core=True,
        )
    return Check("bcc module", "ok", "import bcc works", "all eBPF probes and sockops", core=True)


def header_tree(ctx: Context) -> Check:
    try:
        tree = headers.find(ctx.host)
    except NetdiagError as e:
        return Check("kernel headers", "missing", e.what, "bcc compilation", e.fix or "", core=True)
    detail = f"{tree.version} ({tree.origin})"
    if not tree.matches:
        detail += f"; running {tree.running} differs — fine: netdiag's programs use stable ABI only"
    return Check("kernel headers", "ok", detail, "bcc compilation", core=True)


def bcc_attach(ctx: Context) -> Check:
    return trial(
        ctx,
        "bcc compile+attach",
        "trace-peers, probes, sockops",
        ctx.trials.bcc_tracepoint,
        fix="netdiag doctor --debug shows why; make setup",
        need="CAP_BPF+CAP_PERFMON",
        core=True,
    )


def tracepoints(ctx: Context) -> list[Check]:
    """One row per tracepoint a probe hooks: present, and carrying every argument it reads."""
    out = []
    mp = tracefs.mountpoint(ctx.host)
    readable = mp is not None and os.access(mp / "events", os.R_OK | os.X_OK)
    for tp, need in ctx.hooks.items():
        cat, ev = tp.split(":")
        row = functools.partial(Check, tp, enables=need.enables, core=need.core)
        if mp is None:
            out.append(
                row(
                    status="degraded",
                    detail="tracefs not mounted; cannot look",
                    fix="netdiag doctor --fix",
                )
            )
            continue
        if not readable:
            out.append(
                row(
                    status="missing",
                    detail=f"cannot read {mp}/events: needs root",
                    fix="run as root",
                )
            )
            continue
        fmt = tracefs.tracepoint_format(cat, ev, ctx.host)
        if fmt is None:
            out.append(
                row(
                    status="missing",
                    detail=f"no {mp}/events/{cat}/{ev}",
                    fix="needs a newer kernel; trace-peers falls back to sock_diag polling",
                )
            )
            continue
        lacking = [a for a in need.args if a not in tracefs.format_fields(fmt)]
        if lacking:
            out.append(
                row(
                    status="missing",
                    detail=f"present but lacks {', '.join(lacking)}",
                    fix="needs a newer kernel; trace-peers falls back to sock_diag polling",
                )
            )
            continue
        detail = f"present with the {len(need.args)} args probes read" if need.args else "present"
        out.append(row(status="ok", detail=detail))
    return out


def kprobes(ctx: Context) -> Check:
    mp = tracefs.mountpoint(ctx.host)
    # os.path.exists, not Path.exists: tracefs is unreadable to non-root and must not raise
    has = (mp is not None and os.path.exists(mp / "kprobe_events")) or os.path.exists(
        ctx.host.sys / "bus/event_source/devices/kprobe"
    )
    if has:
        return Check(
            "kprobes", "ok", "kprobe_events present", "bcc's kprobe tools (tcpretrans, tcprtt)"
        )
    return Check(
        "kprobes",
        "missing",
        "CONFIG_KPROBES off: no kprobe_events, no kprobe PMU",
        "bcc's kprobe-based tools; netdiag does not need them (tracepoints only)",
        "none needed for netdiag; for bcc's kprobe tools boot a kernel with CONFIG_KPROBES=y",
    )


def cgroup_sockops(ctx: Context) -> Check:
    from netdiag.kernel import cgroup

    try:
        root = cgroup.v2_root(ctx.host)
    except NetdiagError as e:
        return Check(
            "cgroup v2 sockops", "missing", e.what, "tune --cc per cgroup/port", e.fix or ""
        )
    c = trial(
        ctx,
        "cgroup v2 sockops",
        "tune --cc per cgroup/port",
        ctx.trials.sockops_attach,
        fix=f"check that {root} is writable and BPF cgroup attach is allowed",
        need="CAP_BPF+CAP_SYS_ADMIN",
    )
    return c


def unprivileged_bpf(ctx: Context) -> Check:
    v = read_proc(ctx.host, "sys/kernel/unprivileged_bpf_disabled")
    meaning = {
        "0": "unprivileged users may load BPF",
        "1": "BPF needs CAP_BPF (locked until reboot)",
        "2": "BPF needs CAP_BPF (admin may relax)",
    }.get(v or "", "unknown")
    return Check(
        "unprivileged_bpf_disabled",
        "ok",
        f"{v}: {meaning}",
        "nothing: netdiag runs with CAP_BPF either way",
    )


def lockdown(ctx: Context) -> Check:
    p = ctx.host.sys / "kernel/security/lockdown"
    try:
        text = p.read_text()
    except OSError:
        return Check("lockdown", "ok", "no lockdown LSM", "all BPF features")
    m = re.search(r"\[(\w+)\]", text)
    mode = m.group(1) if m else "none"
    if mode == "none":
        return Check("lockdown", "ok", "lockdown=none", "all BPF features")
    status: Status = "degraded" if mode == "integrity" else "missing"
    return Check(
        "lockdown",
        status,
        f"lockdown={mode}: BPF reads of kernel memory are restricted",
        "bpf_probe_read in probes",
        "boot with lockdown=none (netdiag's tracepoint probes mostly work)",
    )
