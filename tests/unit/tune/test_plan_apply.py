"""plan -> journal -> apply -> revert against a fake /proc/sys (plain files)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from netdiag.errors import InputError, KernelFeatureError, NetdiagError
from netdiag.kernel import sysctl
from netdiag.tune import apply, plan
from netdiag.tune.changes import FileChange, SysctlChange
from netdiag.tune.env import TuneEnv
from tests.unit.tune.conftest import SYSCTLS, fake_read


def snapshot(env: TuneEnv) -> dict[str, str]:
    return {rel: fake_read(env, rel) for rel in SYSCTLS}


def test_host_cc_plan_adds_to_allowed_list_first(fake_env: TuneEnv) -> None:
    p = plan.build(plan.Request(cc="cubic"), fake_env)
    assert [(c.target, c.old, c.new) for c in p.changes] == [
        ("net.ipv4.tcp_allowed_congestion_control", "reno bbr", "reno bbr cubic"),
        ("net.ipv4.tcp_congestion_control", "bbr", "cubic"),
    ]
    assert plan.EXISTING_CONNECTIONS_NOTE in p.notes


def test_bbr_without_sch_fq_skips_default_qdisc(fake_env: TuneEnv) -> None:
    p = plan.build(plan.Request(cc="bbr"), fake_env)
    assert p.changes == []  # already bbr
    assert any("no sch_fq" in n for n in p.notes)
    (fake_env.host.sys / "module/sch_fq").mkdir()
    p = plan.build(plan.Request(cc="bbr"), fake_env)
    assert [c.target for c in p.changes] == ["net.core.default_qdisc"]


def test_apply_then_revert_restores_every_byte(fake_env: TuneEnv) -> None:
    before = snapshot(fake_env)
    req = plan.Request(
        cc="cubic",
        buffers="auto",
        rtt="100ms",
        rate="1gbit",
        sets=[("net.core.somaxconn", "8192")],
        persist=True,
    )
    p = plan.build(req, fake_env)
    entry = apply.apply(p, fake_env, ["netdiag", "tune"])
    assert entry.status == "applied"
    assert fake_read(fake_env, "net/ipv4/tcp_congestion_control") == "cubic"
    assert fake_read(fake_env, "net/ipv4/tcp_rmem") == "4096 131072 33554432"
    [persisted] = list(fake_env.sysctl_d.iterdir())
    assert "net.core.somaxconn = 8192" in persisted.read_text()

    [r] = apply.revert(fake_env)
    assert r.entry.status == "reverted" and not r.problems
    after = snapshot(fake_env)
    # the fake kernel does not re-format: compare values modulo the kernel's tab separators
    assert {k: " ".join(v.split()) for k, v in after.items()} == {
        k: " ".join(v.split()) for k, v in before.items()
    }
    assert not persisted.exists()


def test_journal_is_written_before_the_first_change(fake_env: TuneEnv) -> None:
    p = plan.build(plan.Request(sets=[("net.core.somaxconn", "8192")]), fake_env)
    seen: list[dict[str, object]] = []
    ch = p.changes[0]
    assert isinstance(ch, SysctlChange)
    real_apply = ch.apply

    def spy(env: TuneEnv) -> None:
        [f] = list(fake_env.state.glob("*.json"))
        seen.append(json.loads(f.read_text()))
        real_apply(env)

    object.__setattr__(ch, "apply", spy)
    apply.apply(p, fake_env, ["t"])
    assert seen[0]["status"] == "applying"
    assert seen[0]["changes"][0]["old"] == "4096"  # type: ignore[index]


def test_failure_mid_apply_rolls_back(fake_env: TuneEnv) -> None:
    before = snapshot(fake_env)
    p = plan.build(
        plan.Request(sets=[("net.core.somaxconn", "8192"), ("net.ipv4.tcp_mtu_probing", "1")]),
        fake_env,
    )
    probing = fake_env.host.proc / "sys/net/ipv4/tcp_mtu_probing"
    probing.unlink()
    probing.mkdir()  # unwritable before apply (EISDIR): an operation failure, not bad input
    with pytest.raises(NetdiagError) as e:
        apply.apply(p, fake_env, ["t"])
    assert "rolled back" in str(e.value.fix)
    assert fake_read(fake_env, "net/core/somaxconn").strip() == before["net/core/somaxconn"].strip()
    [entry] = apply.journal_of(fake_env).entries()
    assert entry.status == "rolled-back" and not entry.live


def test_value_the_kernel_rejects_leaves_no_journal_entry(
    fake_env: TuneEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bad input the kernel refuses (EINVAL) after an earlier change applied: that change is
    undone and, as nothing changed, nothing is journaled (docs/cli.md)."""
    before = snapshot(fake_env)
    p = plan.build(
        plan.Request(sets=[("net.core.somaxconn", "8192"), ("net.ipv4.tcp_mtu_probing", "1")]),
        fake_env,
    )
    real_write = sysctl.write

    def kernel(name: str, value: str | int, ns: str | None = None, host: object = None) -> None:
        if name == "net.ipv4.tcp_mtu_probing" and str(value) == "1":
            raise InputError(f"{name}: kernel rejected value '1'", "check the range")
        real_write(name, value, ns, fake_env.host)

    monkeypatch.setattr(sysctl, "write", kernel)
    with pytest.raises(InputError) as e:
        apply.apply(p, fake_env, ["t"])
    assert e.value.fix is not None and e.value.fix.endswith("nothing changed")
    assert {k: v.split() for k, v in snapshot(fake_env).items()} == {
        k: v.split() for k, v in before.items()
    }
    assert apply.journal_of(fake_env).entries() == []


def test_journal_records_what_the_kernel_holds(fake_env: TuneEnv) -> None:
    """`--set net.ipv4.tcp_rmem="1 2"`: the kernel keeps the max it had; plan and journal
    say "1 2 6291456", not "1 2"."""
    p = plan.build(plan.Request(sets=[("net.ipv4.tcp_rmem", "1 2")]), fake_env)
    assert [c.new for c in p.changes] == ["1 2 6291456"]
    entry = apply.apply(p, fake_env, ["t"])
    [saved] = apply.journal_of(fake_env).entries()
    assert [c.new for c in saved.changes] == ["1 2 6291456"] == [c.new for c in entry.changes]


@pytest.mark.parametrize(
    ("key", "value", "what"),
    [
        ("net.core.somaxconn", "-5", "out of range: -5 is not within 0..2147483647"),
        ("net.ipv4.tcp_mtu_probing", "7", "out of range: 7 is not within 0..2"),
        ("net.core.somaxconn", "lots", "the kernel takes an integer here"),
        ("net.ipv4.tcp_rmem", "1 2 3 4", "the kernel takes 3 integers here"),
        ("net.ipv4.tcp_rmem", "4096 8192 100", "must not decrease"),
        ("net.ipv4.tcp_rmem", "0 1 2", "out of range: 0 is not within 1..2147483647"),
        ("net.ipv4.tcp_congestion_control", "nosuchcc", "no congestion control named"),
    ],
)
def test_out_of_range_values_fail_at_planning(
    fake_env: TuneEnv, key: str, value: str, what: str
) -> None:
    with pytest.raises(InputError, match=re.escape(what)):
        plan.build(plan.Request(sets=[(key, value)]), fake_env)


def test_revert_refuses_an_entry_a_later_one_overrode(fake_env: TuneEnv) -> None:
    e1 = apply.apply(
        plan.build(plan.Request(sets=[("net.core.somaxconn", "100")]), fake_env), fake_env, ["t"]
    )
    apply.apply(
        plan.build(plan.Request(sets=[("net.core.somaxconn", "200")]), fake_env), fake_env, ["t"]
    )
    with pytest.raises(InputError, match="later entries"):
        apply.revert(fake_env, e1.id)
    results = apply.revert(fake_env)  # all, newest first
    assert [r.entry.id for r in results] == [2, 1]
    assert fake_read(fake_env, "net/core/somaxconn") == "4096"


def test_unknown_sysctl_and_missing_cc_fail_at_planning(fake_env: TuneEnv) -> None:
    with pytest.raises(InputError, match=r"unknown sysctl net\.core\.nope"):
        plan.build(plan.Request(sets=[("net.core.nope", "1")]), fake_env)
    with pytest.raises(KernelFeatureError) as e:
        plan.build(plan.Request(cc="vegas"), fake_env)
    assert "available: reno bbr cubic" in e.value.what
    # no /proc/modules: no modprobe advice, the config option instead
    assert e.value.fix is not None and "modprobe" not in e.value.fix
    assert "CONFIG_TCP_CONG_VEGAS=y" in e.value.fix
    mod = fake_env.host.lib_modules / "6.18.0-fake/kernel/net/ipv4/tcp_vegas.ko.xz"
    mod.parent.mkdir(parents=True)
    mod.touch()
    with pytest.raises(KernelFeatureError) as e:
        plan.build(plan.Request(cc="vegas"), fake_env)
    assert "modprobe" not in (e.value.fix or "")  # installed, but this kernel cannot load it
    (fake_env.host.proc / "modules").write_text("")
    with pytest.raises(KernelFeatureError) as e:
        plan.build(plan.Request(cc="vegas"), fake_env)
    assert e.value.fix == "load it: `modprobe tcp_vegas`, then retry"


def test_misspelt_cc_is_bad_input_listing_the_available(fake_env: TuneEnv) -> None:
    for name in ("nosuchcc", "BBR", "cubic;rm"):
        with pytest.raises(InputError) as e:
            plan.build(plan.Request(cc=name), fake_env)
        assert e.value.exit_code == 2
        assert e.value.fix == "choose one this kernel offers: reno, bbr, cubic"
    assert not fake_env.state.exists() or not list(fake_env.state.glob("*.json"))


def test_persist_is_host_only(fake_env: TuneEnv) -> None:
    with pytest.raises(InputError, match="host sysctls only"):
        plan.build(plan.Request(cc="cubic", ports=[9000], persist=True), fake_env)


def test_nofile_beyond_nr_open_is_refused(fake_env: TuneEnv) -> None:
    with pytest.raises(InputError, match=r"exceeds fs.nr_open \(1048576\)"):
        plan.build(plan.Request(nofile=2_000_000, pid=1), fake_env)


def test_file_change_restores_previous_content(tmp_path: Path, fake_env: TuneEnv) -> None:
    f = tmp_path / "x.conf"
    f.write_text("old\n")
    ch = FileChange(path=str(f), old_content="old\n", new_content="new\n")
    ch.apply(fake_env)
    assert f.read_text() == "new\n"
    ch.revert(fake_env)
    assert f.read_text() == "old\n"


def test_port_without_cc_is_refused(fake_env: TuneEnv) -> None:
    with pytest.raises(InputError, match="add --cc"):
        plan.build(plan.Request(ports=[9000]), fake_env)


@pytest.mark.parametrize(
    ("profile", "wmem_max"), [("datacenter", 8 << 20), ("lossy-edge", 16 << 20)]
)
def test_profile_wmem_floor_is_the_live_wmem_max(
    fake_env: TuneEnv, profile: str, wmem_max: int
) -> None:
    """A 32 MiB tcp_rmem max must not drag tcp_wmem up to 32 MiB: each direction's floor
    is its own live max, so wmem gets the profile's stated 2 x BDP rule (8 / 16 MiB)."""
    (fake_env.host.proc / "sys/net/ipv4/tcp_rmem").write_text("4096\t131072\t33554432\n")
    p = plan.build(plan.Request(profile=profile), fake_env)
    new = {c.target: c.new for c in p.changes}
    assert new["net.ipv4.tcp_wmem"] == f"4096 16384 {wmem_max}"
    assert "net.ipv4.tcp_rmem" not in new  # 32 MiB already: never lowered
