"""Build fake /proc, /sys, /usr/src trees for the kernel layer's detection logic."""

from __future__ import annotations

from pathlib import Path

from netdiag.kernel.host import HostPaths

FULL_CAPS = "000001ffffffffff"
NO_CAPS = "0000000000000000"


def make(
    tmp: Path,
    *,
    release: str = "6.18.44-test",
    cap_eff: str = FULL_CAPS,
    tracefs: bool = True,
    tracepoints: tuple[str, ...] = ("tcp:tcp_probe",),
    cookie: bool = True,
    cgroup2: bool = True,
    btf: bool = True,
    kprobes: bool = False,
    cc_avail: str = "reno bbr cubic",
    lockdown: str | None = None,
    modules: bool = False,
) -> HostPaths:
    proc, sys = tmp / "proc", tmp / "sys"
    (proc / "sys/kernel").mkdir(parents=True)
    if modules:  # CONFIG_MODULES: the kernel lists its loaded modules here
        (proc / "modules").write_text("")
    (proc / "sys/kernel/osrelease").write_text(release + "\n")
    (proc / "sys/kernel/unprivileged_bpf_disabled").write_text("2\n")
    (proc / "self").mkdir()
    (proc / "self/status").write_text(f"Name:\tpython\nCapInh:\t0\nCapEff:\t{cap_eff}\n")
    ipv4 = proc / "sys/net/ipv4"
    ipv4.mkdir(parents=True)
    (ipv4 / "tcp_available_congestion_control").write_text(cc_avail + "\n")
    (ipv4 / "tcp_allowed_congestion_control").write_text("reno bbr\n")
    (ipv4 / "tcp_congestion_control").write_text("bbr\n")
    mounts = ["proc /proc proc rw 0 0"]
    tr = tmp / "tracing"
    if tracefs:
        mounts.append(f"tracefs {tr} tracefs rw 0 0")
        for tp in tracepoints:
            cat, ev = tp.split(":")
            d = tr / "events" / cat / ev
            d.mkdir(parents=True)
            (d / "id").write_text("1\n")
            fmt = "field:__u32 srtt;\tfield:__u32 snd_cwnd;\n".replace("\t", "\n")
            fmt += "field:__u64 sock_cookie;\n" if cookie else ""
            (d / "format").write_text(fmt)
        if kprobes:
            (tr / "kprobe_events").write_text("")
    if cgroup2:
        cg = tmp / "cgroup-unified"
        cg.mkdir()
        (cg / "cgroup.procs").write_text("")
        mounts.append(f"cgroup2 {cg} cgroup2 rw 0 0")
    (proc / "self/mounts").write_text("\n".join(mounts) + "\n")
    (sys / "kernel").mkdir(parents=True)
    if btf:
        (sys / "kernel/btf").mkdir()
        (sys / "kernel/btf/vmlinux").write_bytes(b"\x9f\xeb")
    if lockdown is not None:
        (sys / "kernel/security").mkdir(parents=True)
        (sys / "kernel/security/lockdown").write_text(lockdown + "\n")
    (tmp / "usr-src").mkdir()
    (tmp / "lib-modules").mkdir()
    return HostPaths(
        proc=proc,
        sys=sys,
        lib_modules=tmp / "lib-modules",
        usr_src=tmp / "usr-src",
        run_netns=tmp / "run-netns",
    )


def debian_headers(host: HostPaths, version: str = "6.1.0-56") -> tuple[Path, Path]:
    """A Debian-style split header tree: arch dir (generated) + -common dir (the rest)."""
    arch = host.usr_src / f"linux-headers-{version}-amd64"
    common = host.usr_src / f"linux-headers-{version}-common"
    (arch / "include/generated").mkdir(parents=True)
    (arch / "include/generated/autoconf.h").write_text("/* arch */\n")
    (arch / "arch/x86/include/generated").mkdir(parents=True)
    (arch / ".config").write_text("CONFIG_BPF=y\n")
    (common / "include/linux").mkdir(parents=True)
    (common / "include/linux/bpf.h").write_text("/* common */\n")
    (common / "include/generated").mkdir(parents=True)
    (common / "include/generated/common_only.h").write_text("/* common gen */\n")
    (common / "arch/x86/include/asm").mkdir(parents=True)
    (common / "arch/x86/include/asm/ptrace.h").write_text("/* asm */\n")
    return arch, common
