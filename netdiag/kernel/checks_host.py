"""doctor's checks of the host's network and process limits: congestion control, the qdiscs
the lab and tune use, TUN, sock_diag, capabilities and RLIMIT_NOFILE."""

from __future__ import annotations

import resource

from netdiag.kernel import caps, cc, modules
from netdiag.kernel.check_context import Check, Context, Status, trial

QDISCS: dict[str, str] = {
    "netem": "lab kernel link engine (delay/loss in the kernel)",
    "fq": "pacing qdisc for tune's default_qdisc; BBR pacing without TCP-internal pacing",
    "htb": "lab rate shaping; kernel link engine",
    "tbf": "lab rate shaping and bounded queues",
}
NOFILE_WANT = 65536


def congestion_control(ctx: Context) -> Check:
    st = cc.state(host=ctx.host)
    detail = (
        f"available: {' '.join(st.available) or '-'}; allowed: {' '.join(st.allowed) or '-'}; "
        f"default: {st.default or '?'}"
    )
    enables = f"tune --cc {'|'.join(cc.USED)}, bench cc"
    missing = [c for c in cc.USED if c not in st.available]
    if not missing:
        return Check("congestion control", "ok", detail, enables)
    return Check(
        "congestion control",
        "degraded",
        detail + f"; missing {' '.join(missing)}",
        enables,
        cc.enable_fix(missing, ctx.host),
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
    return trial(
        ctx,
        "TUN",
        "lab userspace link engine (delay/rate/loss without netem)",
        ctx.trials.tun_device,
        fix=f"{modules.load_fix('tun', host=ctx.host)}; in a container pass --device /dev/net/tun",
        need="CAP_NET_ADMIN",
        core=True,
    )


def sock_diag(ctx: Context) -> Check:
    return trial(
        ctx,
        "sock_diag",
        "bdp, trace-peers fallback without BPF",
        ctx.trials.sock_diag,
        fix=modules.load_fix("inet_diag", "tcp_diag", host=ctx.host),
        need=None,
        core=True,
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
