"""A fake kernel for tune's unit tier: /proc/sys as plain files, so plan/apply/revert run
without privileges and without touching the host."""

from __future__ import annotations

from pathlib import Path

import pytest

from netdiag.kernel.host import HostPaths
from netdiag.tune.env import TuneEnv

SYSCTLS = {
    "kernel/osrelease": "6.18.0-fake\n",
    "net/ipv4/tcp_congestion_control": "bbr\n",
    "net/ipv4/tcp_available_congestion_control": "reno bbr cubic\n",
    "net/ipv4/tcp_allowed_congestion_control": "reno bbr\n",
    "net/ipv4/tcp_rmem": "4096\t131072\t6291456\n",
    "net/ipv4/tcp_wmem": "4096\t16384\t4194304\n",
    "net/ipv4/tcp_mem": "100000\t200000\t300000\n",
    "net/ipv4/tcp_notsent_lowat": "4294967295\n",
    "net/ipv4/tcp_mtu_probing": "0\n",
    "net/ipv4/tcp_slow_start_after_idle": "1\n",
    "net/core/rmem_max": "212992\n",
    "net/core/wmem_max": "212992\n",
    "net/core/somaxconn": "4096\n",
    "net/core/netdev_max_backlog": "1000\n",
    "net/core/default_qdisc": "pfifo_fast\n",
    "fs/nr_open": "1048576\n",
}


@pytest.fixture
def fake_env(tmp_path: Path) -> TuneEnv:
    proc = tmp_path / "proc"
    for rel, text in SYSCTLS.items():
        p = proc / "sys" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    (proc / "self").mkdir()
    (proc / "self/mounts").write_text("cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n")
    (tmp_path / "sys/module").mkdir(parents=True)
    host = HostPaths(
        proc=proc,
        sys=tmp_path / "sys",
        lib_modules=tmp_path / "lib/modules",
        usr_src=tmp_path / "usr/src",
        run_netns=tmp_path / "run/netns",
    )
    return TuneEnv(host=host, state=tmp_path / "state", sysctl_d=tmp_path / "sysctl.d")


def fake_read(env: TuneEnv, rel: str) -> str:
    return (env.host.proc / "sys" / rel).read_text()
