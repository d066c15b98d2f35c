from __future__ import annotations

from pathlib import Path

import pytest

from netdiag.errors import InputError, PrivilegeError
from netdiag.kernel import caps, cgroup, sysctl
from tests.unit.kernel import fakehost


def test_sysctl_read_write_roundtrip(tmp_path: Path) -> None:
    host = fakehost.make(tmp_path)
    assert sysctl.read("net.ipv4.tcp_congestion_control", host=host) == "bbr"
    sysctl.write("net.ipv4.tcp_congestion_control", "cubic", host=host)
    assert sysctl.read("net.ipv4.tcp_congestion_control", host=host) == "cubic"


def test_sysctl_vector_values_are_normalized(tmp_path: Path) -> None:
    host = fakehost.make(tmp_path)
    (host.proc / "sys/net/ipv4/tcp_rmem").write_text("4096\t131072\t6291456\n")
    assert sysctl.read("net.ipv4.tcp_rmem", host=host) == "4096 131072 6291456"


def test_unknown_sysctl(tmp_path: Path) -> None:
    host = fakehost.make(tmp_path)
    with pytest.raises(InputError, match=r"unknown sysctl net\.ipv4\.nope"):
        sysctl.read("net.ipv4.nope", host=host)
    with pytest.raises(InputError, match="unknown sysctl"):
        sysctl.write("net.ipv4.nope", "1", host=host)
    assert not (host.proc / "sys/net/ipv4/nope").exists()  # write created nothing


@pytest.mark.parametrize("bad", ["", "net", "../etc/passwd", "net.ipv4/../../x", "NET IPV4"])
def test_bad_sysctl_names(tmp_path: Path, bad: str) -> None:
    with pytest.raises(InputError):
        sysctl.path_of(bad, fakehost.make(tmp_path))


def test_caps_require_names_missing(tmp_path: Path) -> None:
    host = fakehost.make(tmp_path, cap_eff=f"{1 << 12:016x}")  # NET_ADMIN only
    assert caps.has("CAP_NET_ADMIN", host) and not caps.has("CAP_BPF", host)
    with pytest.raises(PrivilegeError, match="needs CAP_BPF, CAP_PERFMON"):
        caps.require("CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN", why="tracing", host=host)


def test_cgroup_resolve(tmp_path: Path) -> None:
    host = fakehost.make(tmp_path)
    root = cgroup.v2_root(host)
    (root / "svc").mkdir()
    (root / "svc/cgroup.procs").write_text("")
    assert cgroup.resolve("svc", host) == root / "svc"
    assert cgroup.resolve(root / "svc", host) == root / "svc"
    with pytest.raises(InputError, match="not inside the cgroup v2"):
        cgroup.resolve("/sys/fs/cgroup/cpu", host)
    with pytest.raises(InputError, match="not a cgroup v2 directory"):
        cgroup.resolve("nosuch", host)
    with pytest.raises(InputError, match="not inside"):
        cgroup.resolve("svc/../../escape", host)
