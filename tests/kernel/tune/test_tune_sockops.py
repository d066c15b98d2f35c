"""Port-scoped congestion control through the cc_sockops BPF link: connections to the P2P port
in the tuned cgroup get the policy's cc, everything else keeps the namespace default; the
policy outlives the CLI; revert (also after kill -9) leaves nothing attached."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import missing_bcc, missing_tool
from tests.kernel.tune.conftest import paused_then_killed, raw, run

pytestmark = pytest.mark.skipif(
    bool(missing_bcc() or missing_tool("bpftool", "ss")),
    reason=str(missing_bcc() or missing_tool("bpftool", "ss")),
)

P2P_PORT = 47311

# Joins the cgroup (if given), enters the namespace, opens one connection to the P2P port
# and one to another port, reports getsockopt(TCP_CONGESTION) and `ss -ti` for each.
PROBE = textwrap.dedent("""
    import ctypes, json, os, socket, subprocess, sys
    cg, ns, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if cg:
        open(cg + "/cgroup.procs", "w").write("0")
    # setns here rather than `ip netns exec`, which remounts /sys and hides the cgroup tree
    fd = os.open("/run/netns/" + ns, os.O_RDONLY)
    assert ctypes.CDLL(None, use_errno=True).setns(fd, 0x40000000) == 0
    def pair(p, fam=socket.AF_INET, host="127.0.0.1"):
        srv = socket.socket(fam); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((host, p)); srv.listen()
        c = socket.create_connection(srv.getsockname()[:2]); a, _ = srv.accept()
        return srv, c, a
    def cc(s):
        return s.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).rstrip(b"\\0").decode()
    keep, out = [], {}
    for name, p, fam, host in (("p2p", port, socket.AF_INET, "127.0.0.1"),
                               ("other", 0, socket.AF_INET, "127.0.0.1"),
                               ("p2p6", port, socket.AF_INET6, "::1")):
        srv, c, a = pair(p, fam, host); keep += [srv, c, a]
        lp = srv.getsockname()[1]
        ss = subprocess.run(["ss", "-tniH", "state", "established", f"( sport = :{lp} )"],
                            capture_output=True, text=True).stdout
        out[name] = {"client": cc(c), "server": cc(a), "ss": ss}
    print(json.dumps(out))
""")


def probe(ns: str, cg: Path | None) -> dict[str, dict[str, str]]:
    p = subprocess.run(
        [sys.executable, "-c", PROBE, str(cg or ""), ns, str(P2P_PORT)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert p.returncode == 0, p.stderr
    out: dict[str, dict[str, str]] = json.loads(p.stdout)
    return out


def tune_cubic(cg: Path) -> list[str]:
    """cubic for connections to the P2P port from the cgroup ``cg``."""
    return ["tune", "--cc", "cubic", "--cgroup", str(cg), "--port", str(P2P_PORT)]


def attached(cg: Path) -> str:
    return subprocess.run(
        ["bpftool", "cgroup", "show", str(cg)], capture_output=True, text=True
    ).stdout


def test_port_scoped_cc_then_revert_leaves_nothing(
    tune_netns: str, state: dict[str, str], scratch_cgroup: Path
) -> None:
    assert raw("net.ipv4.tcp_congestion_control", tune_netns) == b"bbr\n"
    run(tune_cubic(scratch_cgroup), state)
    # the CLI has exited: the pinned link keeps the policy
    assert "cc_sockops" in attached(scratch_cgroup)
    got = probe(tune_netns, scratch_cgroup)
    assert got["p2p"]["client"] == got["p2p"]["server"] == "cubic"
    assert got["other"]["client"] == got["other"]["server"] == "bbr"
    assert got["p2p6"]["client"] == got["p2p6"]["server"] == "cubic"  # IPv6 too
    assert " cubic " in f" {got['p2p']['ss']} " and " bbr " in f" {got['other']['ss']} "
    # a process outside the tuned cgroup keeps the default even on the P2P port
    outside = probe(tune_netns, None)
    assert outside["p2p"]["client"] == "bbr"

    show = json.loads(run(["tune", "--show", "--json"], state).stdout)
    [link] = show["sockops_links"]
    pin = Path(str(link["pin"]))
    assert pin.exists() and link["attach_type"] == 3  # BPF_CGROUP_SOCK_OPS

    run(["tune", "--revert"], state)
    assert "cc_sockops" not in attached(scratch_cgroup)
    assert not pin.exists()
    after = probe(tune_netns, scratch_cgroup)
    assert after["p2p"]["client"] == "bbr"


def test_sigkill_after_attach_then_revert_detaches(
    tune_netns: str, state: dict[str, str], scratch_cgroup: Path
) -> None:
    somaxconn = raw("net.core.somaxconn", tune_netns)
    tune = [*tune_cubic(scratch_cgroup), "--netns", tune_netns, "--set", "net.core.somaxconn=777"]
    with paused_then_killed(tune, state, after=1):  # sockops attached, sysctl not yet
        pass
    assert "cc_sockops" in attached(scratch_cgroup)  # pinned: survives the kill
    run(["tune", "--revert"], state)
    assert "cc_sockops" not in attached(scratch_cgroup)
    assert raw("net.core.somaxconn", tune_netns) == somaxconn


def test_sigkill_before_pin_leaves_nothing(
    tune_netns: str, state: dict[str, str], scratch_cgroup: Path
) -> None:
    with paused_then_killed(tune_cubic(scratch_cgroup), state, after=0):  # journaled only
        pass
    assert "cc_sockops" not in attached(scratch_cgroup)
    out = run(["tune", "--revert", "--json"], state).stdout
    [r] = json.loads(out)
    assert r["status"] == "reverted" and "never pinned" in r["notes"][0]


def test_cgroup_scope_without_port_sets_every_connection(
    tune_netns: str, state: dict[str, str], scratch_cgroup: Path
) -> None:
    run(["tune", "--cc", "cubic", "--cgroup", str(scratch_cgroup)], state)
    got = probe(tune_netns, scratch_cgroup)
    assert {got[k]["client"] for k in got} == {"cubic"}
    assert probe(tune_netns, None)["other"]["client"] == "bbr"  # outside the cgroup
    run(["tune", "--revert"], state)
    assert "cc_sockops" not in attached(scratch_cgroup)


def test_pin_without_journal_record_is_an_orphan_that_revert_removes(
    tune_netns: str, state: dict[str, str], scratch_cgroup: Path
) -> None:
    run(tune_cubic(scratch_cgroup), state)
    for f in Path(state["NETDIAG_STATE"], "tune").glob("*.json"):
        f.unlink()  # netdiag's record is gone; the attachment must not outlive it
    [link] = json.loads(run(["tune", "--show", "--json"], state).stdout)["sockops_links"]
    assert link["orphan"] is True
    out = run(["tune", "--revert"], state).stdout
    assert "without a journal record" in out and "detached" in out
    assert "cc_sockops" not in attached(scratch_cgroup)
    assert not Path(str(link["pin"])).exists()
