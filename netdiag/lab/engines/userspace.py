"""Userspace engine: the ndlink forwarder between a TUN device in each namespace."""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Any

from netdiag.errors import KernelFeatureError, NetdiagError
from netdiag.kernel import modules, netns
from netdiag.lab import build
from netdiag.lab.engines.base import LinkEnds, direction_params
from netdiag.lab.topology import LinkShape


def _cfg(shape: LinkShape, mtu: int) -> str:
    return " ".join(str(v) for v in direction_params(shape, mtu))


class UserspaceEngine:
    name = "userspace"

    def create(
        self, ends: LinkEnds, shape: LinkShape
    ) -> tuple[subprocess.Popen[bytes] | None, dict[str, Any]]:
        exe = build.forwarder()
        ctl = ends.work / f"{ends.tag}.ctl"
        stats = ends.work / f"{ends.tag}.stats.json"
        ends.work.mkdir(parents=True, exist_ok=True)
        if ctl.exists():
            ctl.unlink()
        os.mkfifo(ctl, 0o600)
        cfg = _cfg(shape, ends.mtu)
        argv = [
            str(exe),
            str(netns.path_of(ends.ns_a)),
            ends.dev_a,
            str(netns.path_of(ends.ns_b)),
            ends.dev_b,
            str(ends.mtu),
            str(ends.seed),
            str(ctl),
            str(stats),
            cfg,
            cfg,
        ]
        # stdin is a pipe we never write: when this process dies (even by SIGKILL) the
        # forwarder sees EOF and exits, taking its TUN devices with it.
        # direction threads run SCHED_FIFO (priority 10 unless NETDIAG_LAB_RT_PRIO says
        # otherwise; 0 = normal scheduling): measured, this is what keeps delay within
        # 0.25 ms on a 2-core host with 64 links and 32 TCP flows busy (docs/benchmarks.md)
        env = {**os.environ, "NDLINK_RT_PRIO": os.environ.get("NETDIAG_LAB_RT_PRIO", "10")}
        log = ends.work / f"{ends.tag}.log"
        with open(log, "wb") as errf:
            p = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errf, env=env
            )
        assert p.stdout is not None
        line = p.stdout.readline()
        p.stdout.close()
        if line.strip() != b"ready":
            p.wait(timeout=5)
            err = log.read_text(errors="replace").strip()
            if "/dev/net/tun" in err:
                raise KernelFeatureError(
                    f"the userspace link engine needs TUN: {err}",
                    f"{modules.load_fix('tun')}; in a container pass --device /dev/net/tun",
                )
            raise NetdiagError(
                f"link forwarder for {ends.ns_a}<->{ends.ns_b} failed: {err}", "see the message"
            )
        rec = {"ctl": str(ctl), "stats": str(stats), "exe": str(exe), "log": str(log)}
        return p, rec

    def set(self, record: dict[str, Any], shape: LinkShape, mtu: int) -> None:
        cfg = _cfg(shape, mtu)
        try:
            fd = os.open(record["ctl"], os.O_WRONLY | os.O_NONBLOCK)
        except OSError as e:
            raise NetdiagError(
                f"link {record.get('a')}<->{record.get('b')} is not running ({e.strerror})",
                "bring the lab up again with `netdiag lab up`",
            ) from e
        try:
            os.write(fd, f"ab {cfg}\nba {cfg}\n".encode())
        finally:
            os.close(fd)

    def stats(self, record: dict[str, Any]) -> dict[str, Any]:
        # ask for a fresh file; the forwarder rewrites it atomically (rename), so wait for that
        try:
            before = os.stat(record["stats"]).st_mtime_ns
            fd = os.open(record["ctl"], os.O_WRONLY | os.O_NONBLOCK)
            try:
                os.write(fd, b"stats\n")
            finally:
                os.close(fd)
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline and os.stat(record["stats"]).st_mtime_ns == before:
                time.sleep(0.005)
        except (OSError, KeyError):
            pass  # the forwarder is gone: the last file it wrote is the answer
        try:
            with open(record["stats"]) as f:
                data: dict[str, Any] = json.load(f)
                return data
        except (OSError, ValueError, KeyError):
            return {}
