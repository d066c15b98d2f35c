"""iperf3 as the outside measurer in a lab: a one-shot server in one node, a client in another."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from typing import Any

from netdiag.errors import NetdiagError
from netdiag.lab.lab import Lab


def iperf3(
    lab: Lab,
    client: str,
    server: str,
    args: list[str],
    seconds: float,
    port: int,
    during: Callable[[], Any] | None = None,
    preexec: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Run an iperf3 client in `client` against a one-shot server in `server`; the JSON result.

    `during` is called while the client runs (e.g. to sample interface counters); `preexec`
    runs in the client's child before exec (e.g. to join a cgroup).
    """
    srv = lab.popen(
        server,
        ["iperf3", "-s", "-1", "-J", "-p", str(port), "-B", lab.addr(server)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 5
        while True:  # wait until the server listens
            r = lab.exec(server, ["ss", "-Htln", f"sport = :{port}"])
            if r.stdout.strip() or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        argv = [
            "iperf3",
            "-c",
            lab.addr(server),
            "-p",
            str(port),
            "-J",
            "-t",
            f"{seconds:g}",
            *args,
        ]
        cli = subprocess.Popen(
            lab.argv(client, argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=preexec,
        )
        try:
            if during is not None:
                during()
            out, err = cli.communicate(timeout=seconds + 30)
        finally:
            if cli.poll() is None:
                cli.kill()
                cli.wait()
        try:
            data: dict[str, Any] = json.loads(out)
        except json.JSONDecodeError as e:
            raise NetdiagError(
                f"iperf3 printed no JSON: {out[-300:]} {err[-300:]}", "see above"
            ) from e
        if data.get("error"):
            raise NetdiagError(f"iperf3: {data['error']}", "is the lab up?")
        return data
    finally:
        try:
            srv.wait(timeout=5)
        except subprocess.TimeoutExpired:
            srv.kill()
            srv.wait()
