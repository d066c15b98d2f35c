from __future__ import annotations

from pathlib import Path

import pytest

from netdiag.kernel import checks, checks_bpf, checks_host
from tests.unit.kernel import fakehost


class FakeTrials:
    def __init__(self, ok: bool = True, qdiscs: dict[str, bool] | None = None) -> None:
        self.ok = ok
        self.q = qdiscs or {"netem": False, "fq": False, "htb": True, "tbf": True}
        self.calls: list[str] = []

    def bcc_tracepoint(self) -> tuple[bool, str]:
        self.calls.append("bcc")
        return self.ok, "fake bcc"

    def sockops_attach(self) -> tuple[bool, str]:
        return self.ok, "fake sockops"

    def tun_device(self) -> tuple[bool, str]:
        return self.ok, "fake tun"

    def sock_diag(self) -> tuple[bool, str]:
        return True, "fake diag"

    def qdiscs(self, kinds: list[str]) -> dict[str, tuple[bool, str]]:
        return {k: (self.q.get(k, False), "fake") for k in kinds}


ALL_TP = tuple(checks.DEFAULT_HOOKS)


@pytest.fixture(autouse=True)
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BCC_KERNEL_SOURCE", raising=False)


def run(
    tmp: Path, trials: FakeTrials | None = None, privileged: bool = True, **kw: object
) -> dict[str, checks.Check]:
    host = fakehost.make(tmp, **kw)  # type: ignore[arg-type]
    fakehost.debian_headers(host)
    ctx = checks.Context(host=host, trials=trials or FakeTrials(), privileged=privileged)
    return {c.name: c for c in checks.run_all(ctx)}


def test_this_machines_profile(tmp_path: Path) -> None:
    """The project's machines: no kprobes, no netem, no fq — core still ready."""
    found = run(tmp_path, tracepoints=ALL_TP)
    assert found["kprobes"].status == "missing"
    assert found["qdisc netem"].status == "degraded" and "userspace" in found["qdisc netem"].fix
    assert found["qdisc fq"].status == "degraded"
    assert found["qdisc htb"].status == "ok"
    assert found["tcp:tcp_probe"].detail == "present with the 3 args probes read"
    assert checks.core_ok(list(found.values()))
    for c in found.values():
        assert c.status in ("ok", "degraded", "missing")
        assert c.enables, c.name
        if c.status != "ok":
            assert c.fix, f"{c.name} is {c.status} but has no fix"


def test_json_shape(tmp_path: Path) -> None:
    found = run(tmp_path, tracepoints=ALL_TP)
    for c in found.values():
        assert {"name", "status", "detail", "enables", "fix"} <= set(c.to_json())


def test_missing_core_tracepoint_fails_core(tmp_path: Path) -> None:
    found = run(tmp_path, tracepoints=("sock:inet_sock_set_state",))
    assert found["tcp:tcp_probe"].status == "missing"
    assert found["tcp:tcp_retransmit_skb"].status == "missing"
    missing = [c.name for c in checks.core_missing(list(found.values()))]
    assert missing == ["tcp:tcp_probe", "tcp:tcp_retransmit_skb"]


def test_tcp_probe_without_cookie_is_missing(tmp_path: Path) -> None:
    """A probe whose program reads args->sock_cookie cannot compile without it."""
    found = run(tmp_path, tracepoints=ALL_TP, cookie=False)
    assert found["tcp:tcp_probe"].status == "missing"
    assert found["tcp:tcp_probe"].detail == "present but lacks sock_cookie"
    assert "sock_diag" in found["tcp:tcp_probe"].fix
    assert not checks.core_ok(list(found.values()))


def test_hooks_come_from_the_caller(tmp_path: Path) -> None:
    host = fakehost.make(tmp_path, tracepoints=("tcp:tcp_probe",))
    hooks = {
        "tcp:tcp_probe": checks.HookNeed("x: rtt", True, ("srtt", "nope")),
        "tcp:tcp_bad_csum": checks.HookNeed("y: csum", False),
    }
    ctx = checks.Context(host=host, trials=FakeTrials(), hooks=hooks)
    rows = {c.name: c for c in checks_bpf.tracepoints(ctx)}
    assert list(rows) == ["tcp:tcp_probe", "tcp:tcp_bad_csum"]
    assert rows["tcp:tcp_probe"].detail == "present but lacks nope"
    assert rows["tcp:tcp_bad_csum"].status == "missing" and not rows["tcp:tcp_bad_csum"].core


def test_tracefs_unmounted_is_degraded_with_fix(tmp_path: Path) -> None:
    found = run(tmp_path, tracefs=False)
    assert found["tracefs"].status == "degraded"
    assert "--fix" in found["tracefs"].fix
    assert found["tcp:tcp_probe"].status == "degraded"


def test_kprobes_detected(tmp_path: Path) -> None:
    assert run(tmp_path, kprobes=True)["kprobes"].status == "ok"


def test_no_capabilities(tmp_path: Path) -> None:
    trials = FakeTrials()
    found = run(
        tmp_path, trials=trials, privileged=False, cap_eff=fakehost.NO_CAPS, tracepoints=ALL_TP
    )
    assert found["CAP_BPF"].status == "missing" and "CAP_BPF" in found["CAP_BPF"].fix
    assert found["bcc compile+attach"].detail.startswith("not tried: needs CAP_BPF")
    assert trials.calls == []  # nothing privileged was attempted
    assert found["sock_diag"].status == "ok"  # works unprivileged
    assert not checks.core_ok(list(found.values()))


def test_cap_sys_admin_implies_bpf_and_perfmon(tmp_path: Path) -> None:
    found = run(tmp_path, cap_eff=f"{1 << 21 | 1 << 12:016x}")
    assert found["CAP_BPF"].status == "ok" and found["CAP_PERFMON"].status == "ok"


def test_failed_trial_reports_missing(tmp_path: Path) -> None:
    found = run(tmp_path, trials=FakeTrials(ok=False), tracepoints=ALL_TP)
    assert found["bcc compile+attach"].status == "missing"
    assert found["TUN"].status == "missing" and "tun" in found["TUN"].fix
    assert not checks.core_ok(list(found.values()))


def test_old_kernel_and_missing_bbr(tmp_path: Path) -> None:
    found = run(tmp_path, release="4.19.0-20-amd64", cc_avail="reno cubic", modules=True)
    assert found["kernel"].status == "degraded"
    assert found["congestion control"].status == "degraded"
    # the fix tune gives too (kernel/cc.py): modprobe only for a module that is installed
    assert found["congestion control"].fix == "install and load tcp_bbr"
    host = fakehost.make(tmp_path / "installed", cc_avail="reno cubic", modules=True)
    mod = host.lib_modules / host.release() / "kernel/net/ipv4/tcp_bbr.ko"
    mod.parent.mkdir(parents=True)
    mod.touch()
    assert checks_host.congestion_control(checks.Context(host=host)).fix == "modprobe tcp_bbr"


def test_fixes_fit_a_kernel_without_module_support(tmp_path: Path) -> None:
    """No /proc/modules (CONFIG_MODULES off, as on this project's VMs): every fix names the
    kernel config option instead of a modprobe that cannot work."""
    found = run(tmp_path, cc_avail="reno cubic", trials=FakeTrials(ok=False), modules=False)
    fixes = {name: c.fix for name, c in found.items() if c.fix}
    assert not [name for name, fix in fixes.items() if "modprobe" in fix], fixes
    assert "CONFIG_TCP_CONG_BBR=y" in found["congestion control"].fix
    assert "CONFIG_TUN=y" in found["TUN"].fix


def test_no_cgroup2(tmp_path: Path) -> None:
    found = run(tmp_path, cgroup2=False)
    assert found["cgroup v2 sockops"].status == "missing"
    assert "mount -t cgroup2" in found["cgroup v2 sockops"].fix


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("[none] integrity confidentiality", "ok"),
        ("none [integrity] confidentiality", "degraded"),
        ("none integrity [confidentiality]", "missing"),
    ],
)
def test_lockdown(tmp_path: Path, text: str, status: str) -> None:
    assert run(tmp_path, lockdown=text)["lockdown"].status == status


def test_trial_exception_never_escapes(tmp_path: Path) -> None:
    class Boom(FakeTrials):
        def tun_device(self) -> tuple[bool, str]:
            raise RuntimeError("ioctl exploded")

    found = run(tmp_path, trials=Boom())
    assert found["TUN"].status == "missing" and "ioctl exploded" in found["TUN"].detail


def test_a_crashing_check_fails_the_core(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(ctx: checks.Context) -> checks.Check:
        raise OSError("boom")

    monkeypatch.setattr(checks, "ALL", [checks_bpf.kernel_version, broken])
    host = fakehost.make(tmp_path)
    found = checks.run_all(checks.Context(host=host, trials=FakeTrials()))
    assert found[1].name == "broken" and "OSError: boom" in found[1].detail
    assert not checks.core_ok(found)
