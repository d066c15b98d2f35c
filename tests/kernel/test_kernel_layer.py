"""Kernel tier for the kernel layer: real bcc, real namespaces, real sysctls, real qdiscs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from netdiag.errors import InputError
from netdiag.kernel import bcc_loader, cgroup, netns, qdisc, selftest, sysctl, tracefs
from tests.conftest import missing_bcc


def _prog_id(fd: int) -> int:
    for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines():
        if line.startswith("prog_id:"):
            return int(line.split()[1])
    raise AssertionError(f"fd {fd} is not a BPF program")


def _prog_loaded(prog_id: int) -> bool:
    # other processes load programs concurrently: look for ours by id, not by counting
    r = subprocess.run(["bpftool", "prog", "show", "id", str(prog_id)], capture_output=True)
    return r.returncode == 0


@pytest.mark.skipif(missing_bcc() is not None, reason=missing_bcc() or "")
def test_compile_attach_count_and_detach() -> None:
    b = bcc_loader.load(bcc_loader.bpf_source("selftest"), {"FILTER_PORT": 0})
    try:
        (fn,) = b.funcs.values()
        prog_id = _prog_id(fn.fd)
        assert _prog_loaded(prog_id)
        with selftest.loopback_flow():
            pass
        assert b[b"hits"][0].value > 0, "tcp:tcp_probe fired no events for a real loopback flow"
    finally:
        b.cleanup()
    assert not _prog_loaded(prog_id), "the program stayed loaded after cleanup"


@pytest.mark.skipif(missing_bcc() is not None, reason=missing_bcc() or "")
def test_defines_reach_the_compiler() -> None:
    # FILTER_PORT is used by netdiag.h; a bad define value must be refused before bcc sees it
    with pytest.raises(InputError):
        bcc_loader.cflags({"FILTER_PORT": "1; evil()"})
    text = bcc_loader.render(bcc_loader.bpf_source("selftest"), {"FILTER_PORT": 9000})
    assert "#define FILTER_PORT 9000" in text and "TRACEPOINT_PROBE(tcp, tcp_probe)" in text


def test_tracefs_is_mounted_on_demand() -> None:
    mp = tracefs.ensure()
    assert (mp / "events").is_dir()
    assert tracefs.tracepoint_exists("tcp", "tcp_probe")


def test_qdisc_probe_on_this_kernel() -> None:
    found = qdisc.probe(["htb", "tbf", "netem", "fq"])
    assert found["htb"].available and found["tbf"].available
    # the project's machines have neither; elsewhere this documents what the probe saw
    for kind in ("netem", "fq"):
        if not found[kind].available:
            assert f"sch_{kind}" in found[kind].detail
    # others create namespaces concurrently: look only for the probe's own prefix
    left = [n for n in netns.list_names() if n.startswith(f"{netns.PREFIX}qdisc-")]
    assert left == [], f"the probe left its scratch namespace behind: {left}"


def test_sysctl_is_namespace_aware(scratch_netns: str) -> None:
    name = "net.ipv4.tcp_congestion_control"
    host_value = sysctl.read(name)
    other = "reno" if host_value != "reno" else "bbr"  # both allowed in any namespace
    sysctl.write(name, other, netns_name=scratch_netns)
    assert sysctl.read(name, netns_name=scratch_netns) == other
    assert sysctl.read(name) == host_value, "writing in a namespace changed the host"


def test_sysctl_rejects_bad_value_and_keeps_old(scratch_netns: str) -> None:
    name = "net.ipv4.tcp_congestion_control"
    old = sysctl.read(name, netns_name=scratch_netns)
    with pytest.raises(InputError, match="kernel rejected value"):
        sysctl.write(name, "nosuchcc", netns_name=scratch_netns)
    assert sysctl.read(name, netns_name=scratch_netns) == old


def test_restricted_cc_in_namespace_explains_allowed_list(scratch_netns: str) -> None:
    name = "net.ipv4.tcp_congestion_control"
    allowed = sysctl.read("net.ipv4.tcp_allowed_congestion_control").split()
    avail = sysctl.read("net.ipv4.tcp_available_congestion_control").split()
    restricted = [c for c in avail if c not in allowed]
    if not restricted:
        pytest.skip(
            "every available congestion control is allowed on this host: nothing restricted"
        )
    old = sysctl.read(name, netns_name=scratch_netns)
    with pytest.raises(InputError, match="tcp_allowed_congestion_control"):
        sysctl.write(name, restricted[0], netns_name=scratch_netns)
    assert sysctl.read(name, netns_name=scratch_netns) == old


def test_run_in_missing_namespace() -> None:
    with pytest.raises(InputError, match="does not exist"):
        netns.run_in("nd-does-not-exist", lambda: None)


def test_scratch_namespace_removed_on_error() -> None:
    with pytest.raises(RuntimeError), netns.scratch("err") as ns:
        assert netns.exists(ns)
        raise RuntimeError("boom")
    assert not netns.exists(ns)


@pytest.mark.skipif(missing_bcc() is not None, reason=missing_bcc() or "")
def test_sockops_trial_leaves_nothing_attached() -> None:
    ok, detail = selftest.sockops_attach()
    assert ok, detail
    tree = subprocess.run(["bpftool", "cgroup", "tree"], capture_output=True, text=True).stdout
    # bpftool truncates names to 15 chars; other tools' sockops may be attached concurrently
    assert "selftest_socko" not in tree and "nd-doctor-" not in tree
    root = cgroup.v2_root()
    assert not list(root.glob("nd-doctor-*")), "the scratch cgroup was left behind"


def test_tun_trial() -> None:
    ok, detail = selftest.tun_device()
    assert ok, detail
