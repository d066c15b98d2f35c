"""Apply then revert restores every value byte for byte; a kill -9 mid-apply is recoverable;
bad input leaves nothing half-applied. All in a scratch namespace (plus the host's allowed-cc
list, which the kernel requires for a namespace default and which is restored)."""

from __future__ import annotations

import json

import pytest

from tests.kernel.tune.conftest import paused_then_killed, raw, run

NETNS_KEYS = [
    "net.ipv4.tcp_congestion_control",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
    "net.core.somaxconn",
    "net.ipv4.tcp_mtu_probing",
    "net.ipv4.tcp_notsent_lowat",
    "net.ipv4.tcp_syn_retries",
]
HOST_KEYS = [
    "net.ipv4.tcp_allowed_congestion_control",
    "net.ipv4.tcp_congestion_control",
    "net.core.rmem_max",
    "net.core.wmem_max",
]


def snapshot(ns: str) -> dict[str, bytes]:
    snap = {f"{ns}:{k}": raw(k, ns) for k in NETNS_KEYS}
    snap.update({f"host:{k}": raw(k) for k in HOST_KEYS})
    return snap


def tune_args(ns: str) -> list[str]:
    return [
        "tune",
        "--netns",
        ns,
        "--allow-host",  # cubic joins the host's allowed-cc list, which a netns default needs
        "--cc",
        "cubic",
        "--buffers",
        "auto",
        "--rtt",
        "200ms",
        "--rate",
        "2gbit",
        "--set",
        "net.core.somaxconn=1234",
        "--set",
        "net.ipv4.tcp_mtu_probing=1",
        "--set",
        "net.ipv4.tcp_notsent_lowat=131072",
    ]


def entries(env: dict[str, str]) -> list[dict[str, object]]:
    out = json.loads(run(["tune", "--show", "--json"], env).stdout)
    journal: list[dict[str, object]] = out["journal"]
    return journal


def test_apply_then_revert_restores_byte_for_byte(tune_netns: str, state: dict[str, str]) -> None:
    before = snapshot(tune_netns)
    run(tune_args(tune_netns), state)
    during = snapshot(tune_netns)
    assert during[f"{tune_netns}:net.ipv4.tcp_congestion_control"] == b"cubic\n"
    assert during[f"{tune_netns}:net.core.somaxconn"] == b"1234\n"
    assert during[f"{tune_netns}:net.ipv4.tcp_wmem"].split()[2] == b"134217728"  # 2×50 MB→128 MiB
    assert (
        during["host:net.ipv4.tcp_congestion_control"]
        == before["host:net.ipv4.tcp_congestion_control"]
    )
    show = json.loads(run(["tune", "--show", "--json"], state).stdout)
    assert {r["target"] for r in show["live"]} >= {
        "net.ipv4.tcp_congestion_control",
        "net.core.somaxconn",
    }

    run(["tune", "--revert"], state)
    assert snapshot(tune_netns) == before
    assert [e["status"] for e in entries(state)] == ["reverted"]


def test_dry_run_changes_nothing(tune_netns: str, state: dict[str, str]) -> None:
    before = snapshot(tune_netns)
    out = json.loads(run([*tune_args(tune_netns), "--dry-run", "--json"], state).stdout)
    targets = {c["target"] for c in out["plan"]["changes"]}
    assert "net.ipv4.tcp_congestion_control" in targets
    assert any("ESnet rule" in n for n in out["plan"]["notes"])
    assert snapshot(tune_netns) == before
    assert entries(state) == []


def test_sigkill_mid_apply_then_revert_restores(tune_netns: str, state: dict[str, str]) -> None:
    before = snapshot(tune_netns)
    with paused_then_killed(tune_args(tune_netns), state, after=3):
        mid = snapshot(tune_netns)
        assert mid != before  # some changes are live, others not yet
        assert mid[f"{tune_netns}:net.core.somaxconn"] == before[f"{tune_netns}:net.core.somaxconn"]
    assert [e["status"] for e in entries(state)] == ["applying"]
    run(["tune", "--revert"], state)
    assert snapshot(tune_netns) == before
    assert [e["status"] for e in entries(state)] == ["reverted"]


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (["--set", "net.ipv4.no_such_thing=1"], 2, "unknown sysctl net.ipv4.no_such_thing"),
        (["--set", "net.core.rmem_max=8388608"], 2, "host-wide, not per network namespace"),
        (["--set", "net.core.netdev_max_backlog=5000"], 2, "host-wide, not per network namespace"),
        (["--set", "kernel.hostname=x"], 2, "kernel.hostname is host-wide"),
        (["--set", "vm.swappiness=1"], 2, "vm.swappiness is host-wide"),
        (["--cc", "cubic"], 2, "adding cubic to it changes the host"),
        (["--cc", "vegas"], 4, "no congestion control 'vegas'"),
        (["--cc", "nosuchcc"], 2, "no congestion control named 'nosuchcc'"),
        (["--set", "net.ipv4.tcp_mtu_probing=7"], 2, "out of range"),
        (
            ["--cc", "bbr", "--cgroup", "/sys/fs/cgroup/cpu", "--port", "9"],
            2,
            "not inside the cgroup v2",
        ),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(
    tune_netns: str, state: dict[str, str], extra: list[str], code: int, message: str
) -> None:
    before = snapshot(tune_netns)
    p = run(
        ["tune", "--netns", tune_netns, "--set", "net.core.somaxconn=999", *extra],
        state,
        check=False,
    )
    assert p.returncode == code, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("netdiag: error: ") and " — " in lines[0]
    assert message in lines[0]
    assert snapshot(tune_netns) == before
    assert entries(state) == []  # refused at planning: nothing journaled


def test_value_the_kernel_rejects_rolls_back_and_journals_nothing(
    tune_netns: str, state: dict[str, str]
) -> None:
    before = snapshot(tune_netns)
    # somaxconn applies first, then the kernel rejects tcp_ecn=5 (EINVAL: its range is 0..2)
    p = run(
        [
            "tune",
            "--netns",
            tune_netns,
            "--set",
            "net.core.somaxconn=999",
            "--set",
            "net.ipv4.tcp_ecn=5",
        ],
        state,
        check=False,
    )
    assert p.returncode == 2, p.stderr
    assert "kernel rejected value '5'" in p.stderr and "nothing changed" in p.stderr
    assert snapshot(tune_netns) == before
    assert entries(state) == []  # bad input: nothing changed, nothing journaled
    assert run(["tune", "--revert"], state).stdout.startswith("nothing to revert")


def test_host_key_under_netns_with_allow_host_is_planned_as_host_scope(
    tune_netns: str, state: dict[str, str]
) -> None:
    before = snapshot(tune_netns)
    out = json.loads(
        run(
            [
                "tune",
                "--netns",
                tune_netns,
                "--allow-host",
                "--set",
                "net.core.netdev_max_backlog=4321",
                "--set",
                "net.core.somaxconn=999",
                "--dry-run",
                "--json",
            ],
            state,
        ).stdout
    )
    scopes = {c["target"]: c["scope"] for c in out["plan"]["changes"]}
    assert scopes == {
        "net.core.netdev_max_backlog": "host",
        "net.core.somaxconn": f"netns {tune_netns}",
    }
    assert snapshot(tune_netns) == before and entries(state) == []


def test_short_vector_is_journaled_as_the_kernel_holds_it(
    tune_netns: str, state: dict[str, str]
) -> None:
    live_max = raw("net.ipv4.tcp_rmem", tune_netns).split()[2].decode()
    run(["tune", "--netns", tune_netns, "--set", "net.ipv4.tcp_rmem=4096 87380"], state)
    assert raw("net.ipv4.tcp_rmem", tune_netns).split() == [b"4096", b"87380", live_max.encode()]
    [entry] = entries(state)
    [change] = entry["changes"]  # type: ignore[index]
    assert change["new"] == f"4096 87380 {live_max}"  # type: ignore[index]
    run(["tune", "--revert"], state)
