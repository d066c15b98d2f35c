"""`bdp --probe` contract on real raw sockets: IPv6 answered, no answer is a failure."""

from __future__ import annotations

import json
import socket
import subprocess

import pytest

from netdiag.cli.main import main
from netdiag.kernel import netns


def _lo_up(ns: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)


def test_probe_answers_over_ipv6(scratch_netns: str, capsys: pytest.CaptureFixture[str]) -> None:
    _lo_up(scratch_netns)
    lst = netns.run_in(
        scratch_netns, lambda: socket.create_server(("::1", 0), family=socket.AF_INET6)
    )
    try:
        port = lst.getsockname()[1]
        rc = main(["bdp", "--netns", scratch_netns, "--probe", f"[::1]:{port}", "--json"])
    finally:
        lst.close()
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert out["target"] == f"[::1]:{port}" and out["answered"] >= 1 and out["refused"] == 0


def test_probe_without_answer_fails(scratch_netns: str, capsys: pytest.CaptureFixture[str]) -> None:
    # a namespace with only lo: nothing routes to the documentation prefix, nothing answers
    _lo_up(scratch_netns)
    rc = main(["bdp", "--netns", scratch_netns, "--probe", "192.0.2.1:80"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert len(err) == 1 and err[0].startswith("netdiag: error: no answer from 192.0.2.1:80")
