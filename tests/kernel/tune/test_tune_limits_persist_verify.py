"""RLIMIT_NOFILE of a live process, --persist's sysctl.d file, and --verify's verdict."""

from __future__ import annotations

import json
import resource
import subprocess
from pathlib import Path

import psutil

from tests.kernel.tune.conftest import raw, run


def test_nofile_of_a_live_process_then_revert(state: dict[str, str]) -> None:
    child = subprocess.Popen(["sleep", "60"])
    try:
        p = psutil.Process(child.pid)
        before = p.rlimit(resource.RLIMIT_NOFILE)
        run(["tune", "--nofile", "4321", "--pid", str(child.pid)], state)
        assert p.rlimit(resource.RLIMIT_NOFILE)[0] == 4321
        run(["tune", "--revert"], state)
        assert p.rlimit(resource.RLIMIT_NOFILE) == before
    finally:
        child.kill()
        child.wait()


def test_gone_pid_and_nr_open_are_refused(state: dict[str, str]) -> None:
    child = subprocess.Popen(["true"])
    child.wait()
    p = run(["tune", "--nofile", "4096", "--pid", str(child.pid)], state, check=False)
    assert p.returncode == 2 and f"no process {child.pid}" in p.stderr
    nr_open = int(raw("fs.nr_open"))
    p = run(["tune", "--nofile", str(nr_open + 1), "--pid", "1"], state, check=False)
    assert p.returncode == 2 and "exceeds fs.nr_open" in p.stderr


def test_persist_writes_sysctl_d_and_revert_removes_it(state: dict[str, str]) -> None:
    # a host sysctl whose change is behaviour-neutral: notsent_lowat "unlimited" minus one
    key = "net.ipv4.tcp_notsent_lowat"
    before = raw(key)
    new = "4294967294" if before != b"4294967294\n" else "4294967293"
    run(["tune", "--set", f"{key}={new}", "--persist"], state)
    try:
        [conf] = list(Path(state["NETDIAG_SYSCTL_D"]).glob("90-netdiag-tune-*.conf"))
        assert f"{key} = {new}" in conf.read_text()
        assert raw(key) == f"{new}\n".encode()
    finally:
        run(["tune", "--revert"], state)
    assert raw(key) == before
    assert not conf.exists()


def test_verify_measures_before_and_after(tune_netns: str, state: dict[str, str]) -> None:
    out = json.loads(
        run(
            [
                "tune",
                "--netns",
                tune_netns,
                "--allow-host",
                "--cc",
                "cubic",
                "--verify",
                "--verify-seconds",
                "0.5",
                "--json",
            ],
            state,
        ).stdout
    )
    v = out["verify"]
    assert v["before"]["cc"] == "bbr" and v["after"]["cc"] == "cubic"
    for side in ("before", "after"):
        m = v[side]
        assert m["throughput_bps"] > 0 and m["bytes_sent"] > 0 and m["rtt_us"] > 0
        assert m["busy_us"] >= m["rwnd_limited_us"] + m["sndbuf_limited_us"]
    assert v["verdict"] in ("better", "same", "worse")
    run(["tune", "--revert"], state)
    assert raw("net.ipv4.tcp_congestion_control", tune_netns) == b"bbr\n"


def test_revert_if_worse_undoes_a_harmful_change(tune_netns: str, state: dict[str, str]) -> None:
    rmem = raw("net.ipv4.tcp_rmem", tune_netns)
    # an 8 KiB receive buffer starves even a loopback flow: receive-window limited, far slower
    p = run(
        [
            "tune",
            "--netns",
            tune_netns,
            "--set",
            "net.ipv4.tcp_rmem=4096 4096 8192",
            "--verify",
            "--verify-seconds",
            "0.5",
            "--revert-if-worse",
            "--json",
        ],
        state,
        check=False,
    )
    assert p.returncode == 5, p.stderr
    assert "reverted (--revert-if-worse)" in p.stderr
    v = json.loads(p.stdout)["verify"]
    assert v["verdict"] == "worse"
    assert v["after"]["rwnd_limited_us"] > v["before"]["rwnd_limited_us"]
    assert raw("net.ipv4.tcp_rmem", tune_netns) == rmem


def test_buffers_auto_measures_the_bdp_on_a_peer(tune_netns: str, state: dict[str, str]) -> None:
    import contextlib
    import socket
    import threading

    from netdiag.kernel import netns

    def make() -> socket.socket:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen()
        return s

    srv = netns.run_in(tune_netns, make)

    def discard() -> None:
        with contextlib.suppress(OSError):
            c, _ = srv.accept()
            while c.recv(1 << 20):
                pass

    threading.Thread(target=discard, daemon=True).start()
    port = srv.getsockname()[1]
    out = json.loads(
        run(
            [
                "tune",
                "--netns",
                tune_netns,
                "--buffers",
                "auto",
                "--peer",
                f"127.0.0.1:{port}",
                "--verify-seconds",
                "0.5",
                "--dry-run",
                "--json",
            ],
            state,
        ).stdout
    )
    srv.close()
    notes = " ".join(out["plan"]["notes"])
    assert "(measured)" in notes and "ESnet rule" in notes
