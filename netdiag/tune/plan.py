"""Build a plan (the changes a tune invocation wants) and its diff against live values.

Planning reads every old value and checks every precondition (the sysctl exists and is
writable in its scope, the cc is offered, the cgroup is v2, the PID lives) before anything
is journaled, so bad input fails with nothing changed.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass, field

from netdiag.errors import InputError, PrivilegeError
from netdiag.kernel import cc, cgroup, sysctl
from netdiag.kernel.netns import exists as netns_exists
from netdiag.tune import buffers, profiles, rlimits, sockops, values
from netdiag.tune.changes import Change, FileChange, RlimitChange, SockopsChange, SysctlChange
from netdiag.tune.env import TuneEnv

EXISTING_CONNECTIONS_NOTE = (
    "existing connections keep their congestion control: the sysctl and sockops hooks apply "
    "to connections opened after the change; restart the service (or let peers reconnect) "
    "to move them"
)


@dataclass
class Request:
    cc: str | None = None
    netns: str | None = None
    cgroup: str | None = None
    ports: list[int] = field(default_factory=list)
    buffers: str | None = None  # "auto"
    bdp: str | None = None
    rtt: str | None = None
    rate: str | None = None
    measured_bdp_bytes: int | None = None  # from a measurement the CLI ran
    profile: str | None = None
    sets: list[tuple[str, str]] = field(default_factory=list)
    nofile: int | None = None
    pid: int | None = None
    persist: bool = False
    allow_host: bool = False  # with --netns: host-wide keys may change the host


@dataclass
class Plan:
    changes: list[Change] = field(default_factory=list)
    unchanged: list[tuple[str, str, str]] = field(default_factory=list)  # scope, key, value
    notes: list[str] = field(default_factory=list)
    # what the operator should set where netdiag cannot: scope, setting, live, planned, why
    advice: list[tuple[str, str, str, str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "changes": [
                {
                    "kind": c.kind,
                    "scope": c.scope,
                    "target": c.target,
                    "old": c.old,
                    "new": c.new,
                    "reason": c.reason,
                }
                for c in self.changes
            ],
            "unchanged": [{"scope": s, "target": k, "value": v} for s, k, v in self.unchanged],
            "advice": [
                {"scope": s, "target": k, "live": old, "planned": new, "why": why}
                for s, k, old, new, why in self.advice
            ],
            "notes": self.notes,
        }


class _Builder:
    def __init__(self, req: Request, env: TuneEnv) -> None:
        self.req, self.env, self.plan = req, env, Plan()
        self._seen: dict[str, SysctlChange] = {}

    def sysctl(self, key: str, value: str, reason: str, netns: str | None = None) -> None:
        host = self.env.host
        netns = self._scope(key, netns)
        old = sysctl.read(key, netns, host)
        new = values.check(key, value, old)
        if key == cc.DEFAULT:
            cc.require(new, netns, host)
        ident = f"{netns or ''}:{key}"
        if ident in self._seen:  # a later source (explicit --set) overrides an earlier one
            self._seen[ident].new, self._seen[ident].reason = new, reason
            return
        if old == new:
            self.plan.unchanged.append(("netns " + netns if netns else "host", key, old))
            return
        if not sysctl.writable(key, netns, host):
            if os.geteuid() != 0:
                raise PrivilegeError(
                    f"writing {key} needs {sysctl.write_capability(key)}",
                    "run as root (sudo netdiag tune …)",
                )
            raise PrivilegeError(
                f"{key} is read-only {f'in namespace {netns}' if netns else 'here'} although "
                "this is root: /proc/sys is mounted read-only",
                "remount /proc/sys read-write, or run in a privileged container",
            )
        ch = SysctlChange(key=key, old=old, new=new, netns=netns, reason=reason)
        self._seen[ident] = ch
        self.plan.changes.append(ch)

    def _scope(self, key: str, netns: str | None) -> str | None:
        """Where writing `key` lands: the namespace only for keys the kernel keeps per
        network namespace; a host-wide key under --netns changes the host, so it needs
        --allow-host and is then planned (and shown) with host scope."""
        host = self.env.host
        if netns is not None and sysctl.netns_scoped(key, netns, host):
            return netns
        if not sysctl.exists(key, None, host):
            raise InputError(
                f"unknown sysctl {key}",
                "check the name with `sysctl -a | grep …`; this kernel has no "
                f"{sysctl.path_of(key, host)}" + (f" (nor has namespace {netns})" if netns else ""),
            )
        if netns is not None and not self.req.allow_host:
            raise InputError(
                f"{key} is host-wide, not per network namespace: with --netns {netns} it "
                "would change the host",
                "drop --netns to tune the host, or add --allow-host to change the host's "
                "value as well (planned with scope host, reverted with --revert)",
            )
        return None

    # -- congestion control ---------------------------------------------------------------
    def congestion_control(self, name: str, reason: str) -> None:
        req = self.req
        name = cc.require(name, req.netns, self.env.host)
        if req.cgroup is not None or req.ports:
            cg = cgroup.resolve(req.cgroup or cgroup.v2_root(self.env.host), self.env.host)
            sockops.defines(name, req.ports)  # validates ports
            self.plan.changes.append(
                SockopsChange(
                    cgroup=str(cg),
                    cc=name,
                    ports=list(req.ports),
                    pin=sockops.new_pin_path(self.env),
                    reason=reason or f"sockops sets TCP_CONGESTION={name} per connection",
                )
            )
            if req.netns:
                self.plan.notes.append(
                    f"the sockops policy follows the cgroup, not --netns {req.netns}: it matches "
                    "connections of that cgroup's processes in every namespace"
                )
        else:
            # The allowed list is host-wide. A namespace may only default to an allowed
            # ("non-restricted") algorithm — the kernel answers EPERM otherwise — so a netns
            # scope may need a host change to it, journaled and reverted like the rest.
            allowed = cc.allowed(None, self.env.host)
            if name not in allowed and req.netns and not req.allow_host:
                raise InputError(
                    f"namespace {req.netns} may default only to a cc on the host's allowed "
                    f"list ({' '.join(allowed)}); adding {name} to it changes the host",
                    "add --allow-host to let netdiag add it (journaled, undone by --revert), "
                    f"or choose one of {', '.join(allowed)}",
                )
            if name not in allowed:
                why = (
                    f"the kernel lets a namespace default only to an allowed cc; add {name}"
                    if req.netns
                    else f"let unprivileged sockets choose {name} with setsockopt(TCP_CONGESTION)"
                )
                self.sysctl(cc.ALLOWED, " ".join([*allowed, name]), why)
            self.sysctl(
                cc.DEFAULT, name, reason or f"default congestion control → {name}", req.netns
            )
        self.plan.notes.append(EXISTING_CONNECTIONS_NOTE)
        self._fq_note(name)

    def _fq_note(self, name: str) -> None:
        if name != "bbr":
            return
        if fq_available(self.env):
            if self.req.netns is None:
                self.sysctl(
                    "net.core.default_qdisc",
                    "fq",
                    "fq paces bbr in the qdisc (bbr otherwise paces in TCP itself)",
                )
        else:
            self.plan.notes.append(
                "default_qdisc fq: skipped — this kernel has no sch_fq; "
                "bbr paces in TCP itself (since Linux 4.13)"
            )

    # -- buffers --------------------------------------------------------------------------
    def buffer_sizes(self, bdp: int, why: str) -> None:
        host, ns = self.env.host, self.req.netns
        tcp_rmem = sysctl.read("net.ipv4.tcp_rmem", ns, host).split()
        tcp_wmem = sysctl.read("net.ipv4.tcp_wmem", ns, host).split()
        tcp_mem_max = int(sysctl.read("net.ipv4.tcp_mem", None, host).split()[2])  # host-wide
        # each direction's floor is its own live max: a large rmem must not raise wmem
        rbp = buffers.plan_max(bdp, int(tcp_rmem[2]), tcp_mem_max)
        wbp = buffers.plan_max(bdp, int(tcp_wmem[2]), tcp_mem_max)
        if rbp.max_bytes == wbp.max_bytes:
            self.plan.notes.append(f"{why}; {rbp.rule}")
        else:
            self.plan.notes.append(f"{why}; tcp_rmem: {rbp.rule}; tcp_wmem: {wbp.rule}")
        reason = f"2 × BDP ({bdp} B) rule"
        r, w = str(rbp.max_bytes), str(wbp.max_bytes)
        self.sysctl("net.ipv4.tcp_rmem", f"{tcp_rmem[0]} {tcp_rmem[1]} {r}", reason, ns)
        self.sysctl("net.ipv4.tcp_wmem", f"{tcp_wmem[0]} {tcp_wmem[1]} {w}", reason, ns)
        if ns is None:
            for key, bp in (("net.core.rmem_max", rbp), ("net.core.wmem_max", wbp)):
                if int(sysctl.read(key, None, host)) < bp.max_bytes:
                    self.sysctl(
                        key, str(bp.max_bytes), reason + " (bounds SO_RCVBUF/SO_SNDBUF setsockopt)"
                    )
        else:
            self.plan.notes.append(
                "net.core.rmem_max/wmem_max are host-wide (read-only in a "
                "namespace); autotuning is bounded by tcp_rmem/tcp_wmem, set here"
            )

    def bdp_from_request(self, p: profiles.Profile | None) -> tuple[int, str] | None:
        req = self.req
        if req.bdp:
            b = buffers.parse_size_bytes(req.bdp)
            return b, f"BDP {b} B (given)"
        if req.rtt or req.rate:
            # a malformed value is the first thing to say, before a missing partner
            rtt_us = buffers.parse_duration_us(req.rtt) if req.rtt else None
            rate = buffers.parse_rate_bps(req.rate) if req.rate else None
            if rtt_us is None or rate is None:
                raise InputError(
                    "--rtt and --rate go together", "give both, e.g. --rtt 100ms --rate 100mbit"
                )
            b = buffers.bdp_bytes(rate, rtt_us)
            return b, f"BDP = {rate} bit/s × {rtt_us} µs / 8 = {b} B"
        if req.measured_bdp_bytes:
            return req.measured_bdp_bytes, f"BDP {req.measured_bdp_bytes} B (measured)"
        if p and p.buffers_rtt and p.buffers_rate:
            rtt_us, rate = (
                buffers.parse_duration_us(p.buffers_rtt),
                buffers.parse_rate_bps(p.buffers_rate),
            )
            b = buffers.bdp_bytes(rate, rtt_us)
            return b, f"profile {p.name}: {p.buffers_reason}"
        if req.buffers == "auto":
            raise InputError(
                "--buffers auto needs the path's BDP",
                "give --bdp BYTES, or --rtt and --rate, or --peer HOST:PORT to measure it",
            )
        return None


def fq_available(env: TuneEnv) -> bool:
    rel = env.host.release()
    if (env.host.sys / "module/sch_fq").exists():
        return True
    base = env.host.lib_modules / rel / "kernel/net/sched"
    return any((base / f"sch_fq{ext}").exists() for ext in (".ko", ".ko.xz", ".ko.zst"))


def build(req: Request, env: TuneEnv) -> Plan:
    b = _Builder(req, env)
    prof = profiles.load(req.profile) if req.profile else None
    if req.persist and (req.netns or req.cgroup or req.ports):
        raise InputError(
            "--persist writes /etc/sysctl.d, which holds host sysctls only",
            "drop --persist for --netns/--cgroup/--port scopes",
        )
    if (req.cgroup is not None or req.ports) and not (req.cc or (prof and prof.cc)):
        raise InputError(
            "--port and --cgroup scope a congestion control policy",
            "add --cc NAME, e.g. --cc bbr --port 9000",
        )
    if req.pid is not None and req.nofile is None:
        raise InputError("--pid goes with --nofile", "e.g. --nofile 65536 --pid 1234")
    if req.allow_host and req.netns is None:
        raise InputError(
            "--allow-host goes with --netns", "drop it: without --netns tune is host-wide"
        )
    if req.netns is not None and not netns_exists(req.netns, env.host):
        raise InputError(f"network namespace {req.netns!r} does not exist", "see `ip netns list`")
    if req.cgroup is not None:
        cgroup.resolve(req.cgroup, env.host)  # early, clear error for a non-v2 path
    name = req.cc or (prof.cc.value if prof and prof.cc else None)
    if name:
        b.congestion_control(name, "" if req.cc or not prof or not prof.cc else prof.cc.reason)
    if req.buffers == "auto" or prof is not None or req.bdp or req.rtt or req.rate:
        got = b.bdp_from_request(prof)
        if got:
            b.buffer_sizes(*got)
    if prof:
        for key, s in prof.sysctls.items():
            if (
                req.netns
                and not req.allow_host
                and not sysctl.netns_scoped(key, req.netns, env.host)
            ):
                b.plan.notes.append(
                    f"{key}: skipped — host-wide, not per namespace (--allow-host sets it)"
                )
                continue
            b.sysctl(key, s.value, s.reason, req.netns)
    for key, value in req.sets:
        b.sysctl(key, value, "given with --set", req.netns)
    if req.nofile is not None:
        _nofile(b, req.nofile, req.pid)
    if req.persist:
        _persist(b)
    return b.plan


def _nofile(b: _Builder, n: int, pid: int | None) -> None:
    nr_open = rlimits.check_against_nr_open(n, b.env.host)
    if pid is None:
        # nothing to apply without a process; the plan still shows the limit, where it
        # stands now (inherited from the calling shell) and how to set it
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        b.plan.advice.append(
            (
                "shell / service (advice)",
                "RLIMIT_NOFILE (soft hard)",
                f"{soft} {hard}",
                f"{n} {max(n, hard)}",
                f"for a systemd service LimitNOFILE={n} in a drop-in (`systemctl edit NAME`); "
                f"for a shell `ulimit -n {n}`; for a running process add --pid PID "
                f"(ceiling fs.nr_open = {nr_open})",
            )
        )
        b.plan.notes.append(f"--nofile {n} without --pid changes nothing itself: see the advice")
        return
    create_time, name = rlimits.identify(pid)
    got = rlimits.get(pid, create_time)
    if got is None:
        raise InputError(f"no process {pid}", "check the PID with `ps`")
    soft, hard = got
    new_hard = max(hard, n) if hard != -1 else hard
    if (soft, hard) == (n, new_hard):
        b.plan.unchanged.append((f"pid {pid} ({name})", "RLIMIT_NOFILE", f"{soft} {hard}"))
        return
    b.plan.changes.append(
        RlimitChange(
            pid=pid,
            create_time=create_time,
            old_soft=soft,
            old_hard=hard,
            new_soft=n,
            new_hard=new_hard,
            name=name,
            reason=f"file descriptors for peer connections (≤ fs.nr_open {nr_open})",
        )
    )


def _persist(b: _Builder) -> None:
    host_sysctls = [c for c in b.plan.changes if isinstance(c, SysctlChange) and c.netns is None]
    if not host_sysctls:
        b.plan.notes.append("--persist: no host sysctl changes to persist")
        return
    path = b.env.sysctl_d / f"90-netdiag-tune-{time.strftime('%Y%m%d%H%M%S')}.conf"
    lines = ["# written by `netdiag tune --persist`; `netdiag tune --revert` removes it"]
    for c in host_sysctls:
        lines += [f"# {c.reason}" if c.reason else "#", f"{c.key} = {c.new}"]
    old = path.read_text() if path.exists() else None
    b.plan.changes.append(
        FileChange(
            path=str(path),
            old_content=old,
            new_content="\n".join(lines) + "\n",
            reason="re-apply these sysctls at boot",
        )
    )
