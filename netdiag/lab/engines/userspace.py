"""Userspace engine: the ndlink forwarder between a TUN device in each namespace."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

from netdiag.errors import NetdiagError
from netdiag.kernel import netns
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
        p = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert p.stdout is not None and p.stderr is not None
        line = p.stdout.readline()
        if line.strip() != b"ready":
            p.wait(timeout=5)
            err = p.stderr.read().decode(errors="replace").strip()
            raise NetdiagError(
                f"link forwarder for {ends.ns_a}<->{ends.ns_b} failed: {err}", "see the message"
            )
        p.stdout.close()
        rec = {"ctl": str(ctl), "stats": str(stats), "exe": str(exe)}
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
        try:
            with open(record["stats"]) as f:
                data: dict[str, Any] = json.load(f)
                return data
        except (OSError, ValueError, KeyError):
            return {}
