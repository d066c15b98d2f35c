"""Labs on the real kernel: up, use, change, tear down — and nothing left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netdiag.lab import Lab, state, two_node
from netdiag.lab.ping import parse_ping, ping_rtt
from netdiag.lab.teardown import down_all
from netdiag.lab.topology import parse
from tests.cli import NETDIAG, run_netdiag
from tests.kernel.lab.helpers import leftovers, pid_alive, tun_devices_anywhere
from tests.labkit import rtt_floor_us

pytestmark = pytest.mark.usefixtures("need_iperf3")


def test_up_exec_set_down_leaves_nothing(lab_name: str, lab_state: Path) -> None:
    with Lab.up(two_node(0.02, 50_000_000, 0.0, name=lab_name)) as lab:
        assert sorted(leftovers(lab_name)) == [f"nd-{lab_name}-a", f"nd-{lab_name}-b"]
        fw = lab.forwarder_pids()
        assert (lab.metadata()["engine"] == "userspace") == bool(fw)
        # the link's delay is a floor (less only by the calibration error); how close the lab
        # gets on this host is a figure of `netdiag bench emulator`, not a test threshold
        slow = ping_rtt(lab, "a", "b", batches=5, count=5)["rtt_median_us"]
        assert slow >= rtt_floor_us(20_000), slow
        lab.set_link("a", "b", delay_s=0.005)
        fast = ping_rtt(lab, "a", "b", batches=5, count=5)["rtt_median_us"]
        # the change took effect: the RTT follows the new delay down (15 ms apart)
        assert 5_000 <= fast < slow - 10_000, (fast, slow)
        with open("/proc/sys/net/ipv4/tcp_rmem") as f:
            host_before = f.read()
        lab.sysctl("a", "net.ipv4.tcp_rmem", "4096 65536 8388607")
        got = lab.exec("a", ["cat", "/proc/sys/net/ipv4/tcp_rmem"]).stdout.split()
        assert got == ["4096", "65536", "8388607"]
        with open("/proc/sys/net/ipv4/tcp_rmem") as f:
            assert f.read() == host_before  # only the node's namespace changed
        from netdiag.errors import InputError, NetdiagError

        with pytest.raises(InputError, match="only net"):
            lab.sysctl("a", "kernel.pid_max", 65536)  # host-global: refused
        with pytest.raises(NetdiagError, match="cannot set"):
            lab.sysctl("a", "net.ipv4.no_such_knob", 1)
        srv = lab.popen("b", ["sleep", "300"])
        assert state.path_of(lab_name).exists()
    assert leftovers(lab_name) == []
    assert not state.path_of(lab_name).exists()
    assert not state.work_dir(lab_name).exists()  # nothing worth keeping: no directory either
    assert srv.poll() is not None
    assert not any(pid_alive(p) for p in fw)
    assert tun_devices_anywhere(["ndl-a", "ndl-b"]) == []


def test_failure_during_up_cleans_up(lab_name: str) -> None:
    # a command that cannot start makes `up` fail half-way; what was made is removed
    topo = parse(
        f'name = "{lab_name}"\n[[nodes]]\nname = "a"\ncommand = ["/nonexistent/x"]\n'
        '[[nodes]]\nname = "b"\n[[links]]\na = "a"\nb = "b"\ndelay = "1ms"\n'
    )
    with Lab.up(topo) as lab:
        time.sleep(0.3)
        crashed = lab.crashed()
        assert [c.node for c in crashed] == ["a"] and crashed[0].proc.returncode != 0
        assert "nonexistent" in crashed[0].tail()
    assert leftovers(lab_name) == []


def test_sigkill_of_supervisor_then_down_all(lab_name: str, lab_state: Path) -> None:
    code = (
        "import sys, time\n"
        "from netdiag.lab import Lab, two_node\n"
        f"lab = Lab.start(two_node(0.01, 10_000_000, name={lab_name!r}))\n"
        "lab.popen('b', ['sleep', '300'])\n"
        "print('ready', flush=True)\n"
        "time.sleep(300)\n"
    )
    sup = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=os.environ
    )
    assert sup.stdout is not None and sup.stdout.readline().strip() == "ready"
    rec = state.read(lab_name)
    assert rec is not None
    procs = [p["pid"] for p in rec["procs"]]
    links = [ln["pid"] for ln in rec["links"] if "pid" in ln]
    sup.send_signal(signal.SIGKILL)
    sup.wait()
    time.sleep(0.3)
    # after kill -9 the namespaces and the lab's own process remain ...
    assert len(leftovers(lab_name)) == 2
    assert all(pid_alive(p) for p in procs)
    # ... (forwarders notice their supervisor is gone and exit on their own)
    assert not any(pid_alive(p) for p in links)
    r = run_netdiag("lab", "down", "--all", "--json")
    assert r.returncode == 0, r.stderr
    assert [d["lab"] for d in json.loads(r.stdout)] == [lab_name]
    assert leftovers(lab_name) == []
    assert not any(pid_alive(p) for p in procs)
    assert state.names() == []


def test_down_all_leaves_unrecorded_namespaces_alone(lab_name: str) -> None:
    from netdiag.kernel import netns

    with netns.scratch("labkeep") as keep:
        with Lab.up(two_node(0.001, 0, name=lab_name)):
            pass
        assert down_all() == []
        assert netns.exists(keep)


def test_32_namespaces_star(lab_name: str) -> None:
    text = Path(__file__).parents[3].joinpath("netdiag/lab/examples/star32.toml").read_text()
    topo = parse(text.replace('name = "star32"', f'name = "{lab_name}"'))
    assert len(topo.nodes) == 32
    t0 = time.monotonic()
    with Lab.up(topo) as lab:
        up_s = time.monotonic() - t0
        assert len(leftovers(lab_name)) == 32
        # spoke to spoke crosses two links: 2 x 20 ms (less only by the calibration error); hub: one
        rtt = ping_rtt(lab, "s1", "s31", batches=3, count=5)["rtt_median_us"]
        one = ping_rtt(lab, "s1", "hub", batches=3, count=5)["rtt_median_us"]
        assert one >= rtt_floor_us(20_000) and rtt >= rtt_floor_us(40_000), (one, rtt)
        assert rtt > one + 10_000, (one, rtt)
        print(f"32-node lab up in {up_s:.1f} s, s1->s31 RTT {rtt / 1000:.3f} ms")
    assert leftovers(lab_name) == []


def test_cli_detached_lifecycle(lab_name: str, tmp_path: Path) -> None:
    topo = tmp_path / "two.toml"
    topo.write_text(
        f'name = "{lab_name}"\n[[nodes]]\nname = "a"\n[[nodes]]\nname = "b"\n'
        '[[links]]\na = "a"\nb = "b"\ndelay = "10ms"\nrate = "20mbit"\n'
    )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return run_netdiag(*args, timeout=60)

    r = run("lab", "up", str(topo), "--detach", "--json")
    assert r.returncode == 0, r.stderr
    try:
        st = json.loads(run("lab", "status", "--json").stdout)
        assert st[0]["lab"] == lab_name and st[0]["supervisor_alive"]
        log = state.work_dir(lab_name) / "supervisor.log"
        kept = log.read_bytes()
        assert kept  # the supervisor's --json line
        again = run("lab", "up", str(topo), "--detach")
        assert again.returncode == 2, again.stderr
        assert again.stderr.splitlines() == [
            f"netdiag: error: lab {lab_name} is already up "
            f"(supervisor pid {st[0]['supervisor_pid']}) — `netdiag lab down {lab_name}` "
            "first, or give the lab another name with --name"
        ]
        assert log.read_bytes() == kept  # the running lab's log is not truncated
        r = run("lab", "status", "nosuch")
        assert r.returncode == 2 and r.stderr.startswith("netdiag: error: no lab named 'nosuch'")
        assert st[0]["links"][0]["rate_bps"] == 20_000_000
        r = run("lab", "exec", "a", "--", "ping", "-q", "-c", "3", "-i", "0.05", "10.0.0.2")
        assert r.returncode == 0 and parse_ping(r.stdout)["rtt_avg_us"] >= rtt_floor_us(10_000)
        r = run("lab", "link", "set", "a", "b", "--delay", "30ms", "--loss", "0.5%", "--json")
        assert r.returncode == 0, r.stderr
        changed = json.loads(r.stdout)
        assert changed["delay_us"] == 30_000 and changed["loss"] == 0.005
        assert changed["queue_pkts"] == 50  # 1 BDP follows: 20 Mbit/s x 30 ms / 1500 B
        r = run("lab", "exec", "a", "--", "ping", "-q", "-c", "3", "-i", "0.05", "10.0.0.2")
        assert parse_ping(r.stdout)["rtt_avg_us"] >= rtt_floor_us(30_000)
        r = run("lab", "exec", "a", "--", "false")
        assert r.returncode == 1  # the command's exit status passes through
        r = run("lab", "link", "set", "a", "b", "--loss", "0")
        assert r.returncode == 0 and "loss 0%" in r.stdout  # a change to 0 is echoed too
        r = run("lab", "link", "set", "a", "zz", "--delay", "1ms")
        assert r.returncode == 2 and "no link a <-> zz" in r.stderr
    finally:
        r = run("lab", "down", lab_name)
    assert r.returncode == 0, r.stderr
    assert leftovers(lab_name) == []
    assert run("lab", "status", "--json").stdout.strip() == "[]"


def test_bad_topology_file_exit_code(tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    f.write_text('[[nodes]]\nname = "a"\n[[links]]\na = "a"\nb = "nope"\n')
    r = run_netdiag("lab", "up", str(f))
    assert r.returncode == 2
    assert f"netdiag: error: {f}:5: links[0].b: 'nope' is not a node" in r.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_foreground_up_tears_down_on_signal(lab_name: str, tmp_path: Path, sig: int) -> None:
    topo = tmp_path / "fg.toml"
    topo.write_text(
        f'name = "{lab_name}"\n[[nodes]]\nname = "a"\ncommand = "sleep 300"\n'
        '[[nodes]]\nname = "b"\n[[links]]\na = "a"\nb = "b"\ndelay = "5ms"\n'
    )
    p = subprocess.Popen(
        [*NETDIAG, "lab", "up", str(topo), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ,
    )
    assert p.stdout is not None
    meta = json.loads(p.stdout.readline())  # printed once the lab is up
    assert meta["lab"] == lab_name
    rec = state.read(lab_name)
    assert rec is not None and len(leftovers(lab_name)) == 2
    pids = [q["pid"] for q in rec["procs"]] + [ln["pid"] for ln in rec["links"]]
    p.send_signal(sig)
    _, err = p.communicate(timeout=30)
    assert p.returncode == (130 if sig == signal.SIGINT else 0), err
    assert leftovers(lab_name) == []
    assert not any(pid_alive(q) for q in pids)
    assert state.read(lab_name) is None


def test_foreign_namespace_with_our_name_is_left_alone(lab_name: str) -> None:
    from netdiag.errors import NetdiagError
    from netdiag.kernel import netns

    foreign = f"nd-{lab_name}-b"
    netns.create(foreign)
    try:
        with (
            pytest.raises(NetdiagError, match="exists but no lab records it"),
            Lab.up(two_node(0.001, 0, name=lab_name)),
        ):
            pass
        assert netns.exists(foreign)
        assert not netns.exists(f"nd-{lab_name}-a")
        assert state.read(lab_name) is None
    finally:
        netns.delete(foreign)


def test_down_stale_spares_live_labs(lab_name: str) -> None:
    dead = f"{lab_name}d"
    code = (
        "import time\n"
        "from netdiag.lab import Lab, two_node\n"
        f"Lab.start(two_node(0.001, 0, name={dead!r}))\n"
        "print('ready', flush=True)\n"
        "time.sleep(300)\n"
    )
    sup = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert sup.stdout is not None and sup.stdout.readline().strip() == "ready"
    sup.kill()
    sup.wait()
    with Lab.up(two_node(0.001, 0, name=lab_name)):
        r = run_netdiag("lab", "down", "--stale", "--json")
        assert r.returncode == 0, r.stderr
        assert [d["lab"] for d in json.loads(r.stdout)] == [dead]
        assert leftovers(dead) == []
        assert len(leftovers(lab_name)) == 2 and state.read(lab_name) is not None
    assert leftovers(lab_name) == []


def test_dead_forwarder_is_reported(lab_name: str) -> None:
    with Lab.up(two_node(0.001, 0, name=lab_name)) as lab:
        if lab.metadata()["engine"] != "userspace":
            pytest.skip("needs the userspace engine (forwarder processes)")
        assert lab.dead_links() == []
        os.kill(lab.forwarder_pids()[0], signal.SIGKILL)
        time.sleep(0.2)
        assert lab.dead_links() == [("a", "b", -signal.SIGKILL)]
        assert lab.dead_links() == []  # reported once
    assert leftovers(lab_name) == []


def test_kernel_engine_without_netem_says_so(lab_name: str) -> None:
    from netdiag.errors import KernelFeatureError
    from netdiag.lab.engines import netem_available

    if netem_available():
        pytest.skip("this kernel has sch_netem: the kernel engine is available")
    with pytest.raises(KernelFeatureError, match="sch_netem"):
        Lab.start(two_node(0.01, 0, name=lab_name, engine="kernel"))
    assert leftovers(lab_name) == [] and state.read(lab_name) is None


def test_detached_up_keeps_the_supervisors_exit_code_and_says_it_once(
    lab_name: str, tmp_path: Path
) -> None:
    """`lab up -d` whose background supervisor fails (a foreign namespace holds one of the
    lab's names): the foreground command exits with the supervisor's code and its one error
    line, once, pointing at the log. A refusal the foreground can make itself (`--engine
    kernel` without sch_netem) comes before any supervisor or log."""
    from netdiag.kernel import netns
    from netdiag.lab.engines import netem_available

    topo = tmp_path / "two.toml"
    topo.write_text(
        f'name = "{lab_name}"\n[[nodes]]\nname = "a"\n[[nodes]]\nname = "b"\n'
        '[[links]]\na = "a"\nb = "b"\ndelay = "10ms"\n'
    )
    foreign = f"nd-{lab_name}-b"
    netns.create(foreign)
    try:
        r = run_netdiag("lab", "up", str(topo), "--detach", timeout=60)
        assert r.returncode == 1, r.stderr
        [line] = r.stderr.splitlines()
        assert line.startswith(f"netdiag: error: namespace {foreign} exists but no lab records it")
        assert line.count("netdiag: error:") == 1
        assert line.endswith(f"supervisor log: {state.work_dir(lab_name) / 'supervisor.log'}")
        assert netns.exists(foreign) and state.read(lab_name) is None
    finally:
        netns.delete(foreign)
    assert leftovers(lab_name) == []
    if not netem_available():
        log = state.work_dir(lab_name) / "supervisor.log"
        log.unlink()
        r = run_netdiag("lab", "up", str(topo), "--detach", "--engine", "kernel", timeout=60)
        assert r.returncode == 4, r.stderr
        [line] = r.stderr.splitlines()
        assert line.startswith("netdiag: error: the kernel link engine needs sch_netem")
        assert not log.exists() and state.read(lab_name) is None
