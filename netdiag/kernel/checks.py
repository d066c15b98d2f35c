"""doctor's checks: what this kernel can do for netdiag, and how to fix what it cannot.

File-based facts read through `HostPaths` (unit tests point it at a fake tree); live trials
(compile a BPF program, add a qdisc, open TUN …) go through a `Trials` object that tests
replace. Each check says which netdiag features it enables and whether netdiag's core needs it.
"""

from __future__ import annotations

import functools
import os
import re
import resource
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Literal, Protocol

from netdiag.errors import NetdiagError
from netdiag.kernel import caps, headers, modules, tracefs
from netdiag.kernel.host import REAL, HostPaths

Status = Literal["ok", "degraded", "missing"]


@dataclass(frozen=True)
class HookNeed:
    """A tracepoint some probe hooks: the arguments it reads and what it enables."""

    enables: str
    core: bool
    args: tuple[str, ...] = ()


# Used when no probe manifests are given (the CLI passes the ones from probes/*.toml).
DEFAULT_HOOKS: dict[str, HookNeed] = {
    "tcp:tcp_probe": HookNeed(
        "trace-peers: RTT, cwnd, windows per socket cookie",
        True,
        ("srtt", "snd_cwnd", "sock_cookie"),
    ),
    "sock:inet_sock_set_state": HookNeed("trace-peers: connection lifecycle", True),
    "tcp:tcp_retransmit_skb": HookNeed("trace-peers: retransmits", True),
    "skb:kfree_skb": HookNeed("tcp_drops: drops with reasons", False),
    "tcp:tcp_cong_state_set": HookNeed("tcp_cong: time in each congestion state", False),
}
QDISCS: dict[str, str] = {
    "netem": "lab kernel link engine (delay/loss in the kernel)",
    "fq": "pacing qdisc for tune's default_qdisc; BBR pacing without TCP-internal pacing",
    "htb": "lab rate shaping; kernel link engine",
    "tbf": "lab rate shaping and bounded queues",
}
NOFILE_WANT = 65536


@dataclass
class Check:
    name: str
    status: Status
    detail: str
    enables: str
    fix: str = ""
    core: bool = False

    def to_json(self) -> dict[str, object]:
        return asdict(self)


class Trials(Protocol):
    def bcc_tracepoint(self) -> tuple[bool, str]: ...
    def sockops_attach(self) -> tuple[bool, str]: ...
    def tun_device(self) -> tuple[bool, str]: ...
    def sock_diag(self) -> tuple[bool, str]: ...
    def qdiscs(self, kinds: list[str]) -> dict[str, tuple[bool, str]]: ...


class LiveTrials:
    """The real thing (root only)."""

    def bcc_tracepoint(self) -> tuple[bool, str]:
        from netdiag.kernel import selftest

        return selftest.bcc_tracepoint()

    def sockops_attach(self) -> tuple[bool, str]:
        from netdiag.kernel import selftest

        return selftest.sockops_attach()

    def tun_device(self) -> tuple[bool, str]:
        from netdiag.kernel import selftest

        return selftest.tun_device()

    def sock_diag(self) -> tuple[bool, str]:
        from netdiag.kernel import selftest

        return selftest.sock_diag()

    def qdiscs(self, kinds: list[str]) -> dict[str, tuple[bool, str]]:
        from netdiag.kernel import qdisc

        return {k: (p.available, p.detail) for k, p in qdisc.probe(kinds).items()}


@dataclass
class Context:
    host: HostPaths = REAL
    trials: Trials = field(default_factory=LiveTrials)
    # trials need privileges; without them a trial's row says what is missing instead of failing
    privileged: bool = True
    hooks: dict[str, HookNeed] = field(default_factory=lambda: dict(DEFAULT_HOOKS))


def _read(host: HostPaths, rel: str) -> str | None:
    try:
        return (host.proc / rel).read_text().strip()
    except OSError:
        return None


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


def _trial(
    ctx: Context,
    name: str,
    enables: str,
    fn: Callable[[], tuple[bool, str]],
    fix: str,
    core: bool,
    need: str | None,
) -> Check:
    if need is not None and not ctx.privileged:
        return Check(name, "missing", f"not tried: needs {need}", enables, "run as root", core)
    try:
        ok, detail = fn()
    except NetdiagError as e:
        ok, detail = False, str(e)
    except Exception as e:  # a trial must never take doctor down; report what broke
        ok, detail = False, f"{type(e).__name__}: {e}"
    return Check(name, "ok" if ok else "missing", detail, enables, "" if ok else fix, core)


def bcc_attach(ctx: Context) -> Check:
    return _trial(
        ctx,
        "bcc compile+attach",
        "trace-peers, probes, sockops",
        ctx.trials.bcc_tracepoint,
        "netdiag doctor --debug shows why; make setup",
        True,
        "CAP_BPF+CAP_PERFMON",
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
    c = _trial(
        ctx,
        "cgroup v2 sockops",
        "tune --cc per cgroup/port",
        ctx.trials.sockops_attach,
        f"check that {root} is writable and BPF cgroup attach is allowed",
        False,
        "CAP_BPF+CAP_SYS_ADMIN",
    )
    return c


def congestion_control(ctx: Context) -> Check:
    avail = (_read(ctx.host, "sys/net/ipv4/tcp_available_congestion_control") or "").split()
    allowed = (_read(ctx.host, "sys/net/ipv4/tcp_allowed_congestion_control") or "").split()
    cur = _read(ctx.host, "sys/net/ipv4/tcp_congestion_control") or "?"
    detail = (
        f"available: {' '.join(avail) or '-'}; allowed: {' '.join(allowed) or '-'}; default: {cur}"
    )
    missing = [c for c in ("bbr", "cubic") if c not in avail]
    if not missing:
        return Check("congestion control", "ok", detail, "tune --cc bbr|cubic, bench cc")
    return Check(
        "congestion control",
        "degraded",
        detail + f"; missing {' '.join(missing)}",
        "tune --cc bbr|cubic, bench cc",
        modules.load_fix(*(f"tcp_{m}" for m in missing), host=ctx.host),
    )


def qdiscs(ctx: Context) -> list[Check]:
    kinds = list(QDISCS)
    if not ctx.privileged:
        return [
            Check(
                f"qdisc {k}", "missing", "not tried: needs CAP_NET_ADMIN", QDISCS[k], "run as root"
            )
            for k in kinds
        ]
    try:
        res = ctx.trials.qdiscs(kinds)
    except Exception as e:
        return [
            Check(f"qdisc {k}", "missing", f"probe failed: {e}", QDISCS[k], "run as root")
            for k in kinds
        ]
    fixes = {
        "netem": "none needed: the lab uses its userspace engine (automatic); for the kernel "
        f"engine {modules.load_fix('sch_netem', host=ctx.host)}",
        "fq": "none needed: BBR paces inside TCP and tune skips default_qdisc; for fq "
        + modules.load_fix("sch_fq", host=ctx.host),
        "htb": modules.load_fix("sch_htb", host=ctx.host),
        "tbf": modules.load_fix("sch_tbf", host=ctx.host),
    }
    out = []
    for k in kinds:
        ok, detail = res.get(k, (False, "not probed"))
        status: Status = "ok" if ok else ("degraded" if k in ("netem", "fq") else "missing")
        out.append(Check(f"qdisc {k}", status, detail, QDISCS[k], "" if ok else fixes[k]))
    return out


def tun(ctx: Context) -> Check:
    return _trial(
        ctx,
        "TUN",
        "lab userspace link engine (delay/rate/loss without netem)",
        ctx.trials.tun_device,
        f"{modules.load_fix('tun', host=ctx.host)}; in a container pass --device /dev/net/tun",
        True,
        "CAP_NET_ADMIN",
    )


def sock_diag(ctx: Context) -> Check:
    return _trial(
        ctx,
        "sock_diag",
        "bdp, trace-peers fallback without BPF",
        ctx.trials.sock_diag,
        modules.load_fix("inet_diag", "tcp_diag", host=ctx.host),
        True,
        None,
    )


def capabilities(ctx: Context) -> list[Check]:
    need = {
        "CAP_BPF": ("load BPF programs (probes, sockops)", True),
        "CAP_PERFMON": ("attach tracepoints", True),
        "CAP_NET_ADMIN": ("namespaces, links, qdiscs, sysctls (lab, tune)", True),
        "CAP_SYS_ADMIN": ("mount tracefs, setns, cgroup attach", False),
    }
    out = []
    for cap, (enables, core) in need.items():
        if caps.has(cap, ctx.host):
            out.append(Check(cap, "ok", "in the effective set", enables, core=core))
        else:
            out.append(
                Check(
                    cap,
                    "missing",
                    "not in the effective set",
                    enables,
                    f"run as root or grant {cap}",
                    core,
                )
            )
    return out


def unprivileged_bpf(ctx: Context) -> Check:
    v = _read(ctx.host, "sys/kernel/unprivileged_bpf_disabled")
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


def nofile(ctx: Context) -> Check:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    detail = f"soft {soft}, hard {hard}"
    if soft >= NOFILE_WANT:
        return Check("RLIMIT_NOFILE", "ok", detail, "node clusters, many peers per node")
    return Check(
        "RLIMIT_NOFILE",
        "degraded",
        detail + f" (< {NOFILE_WANT})",
        "node clusters, many peers per node",
        f"ulimit -n {max(hard, NOFILE_WANT)} or netdiag tune --nofile {NOFILE_WANT} --pid PID",
    )


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
