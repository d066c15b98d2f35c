"""`netdiag node run` as an operator runs it: config file + environment, SIGINT shutdown, and
errors that say what is wrong and how to fix it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.cli import NETDIAG
from tests.e2e.node.test_node_cluster import free_ports, get, node_genesis, wait

pytestmark = pytest.mark.e2e


def genesis(tmp: Path) -> None:
    node_genesis(tmp, 1, "cli", 100)


def test_config_file_env_and_sigint(tmp_path: Path) -> None:
    genesis(tmp_path)
    p2p, api = free_ports(2)
    cfg = tmp_path / "node.toml"
    cfg.write_text(
        f'data_dir = "{tmp_path / "data"}"\ngenesis = "{tmp_path / "genesis.json"}"\n'
        f'key = "{tmp_path / "validator-0.key"}"\nlisten = "127.0.0.1:{p2p}"\n'
        f'api = "127.0.0.1:1"\n'
    )
    env = {**os.environ, "NETDIAG_NODE_API": f"127.0.0.1:{api}", "NETDIAG_NODE_TLS": "false"}
    proc = subprocess.Popen(
        [*NETDIAG, "node", "run", "--config", str(cfg)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        st = wait(lambda: get(api, "/status"), 60, "api from the environment's address")
        assert st["p2p_port"] == p2p and st["tls"] is False and st["validator"]
        wait(lambda: get(api, "/status")["height"] >= 3, 60, "production")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stderr is not None
    events = [json.loads(line)["event"] for line in proc.stderr.read().splitlines()]
    assert events[0] == "node_started" and events[-1] == "node_stopped"
    assert "shutdown" in events


def test_errors_say_what_and_how(tmp_path: Path) -> None:
    res = subprocess.run(
        [*NETDIAG, "node", "run", "--data-dir", str(tmp_path)], capture_output=True, text=True
    )
    assert res.returncode == 2 and "netdiag: error:" in res.stderr and "--genesis" in res.stderr
    res = subprocess.run(
        [
            *NETDIAG,
            "node",
            "run",
            "--data-dir",
            str(tmp_path),
            "--genesis",
            str(tmp_path / "missing.json"),
        ],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2 and "cannot read genesis file" in res.stderr
    genesis(tmp_path)
    busy = free_ports(1)[0]
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", busy))
        s.listen()
        res = subprocess.run(
            [
                *NETDIAG,
                "node",
                "run",
                "--data-dir",
                str(tmp_path / "d"),
                "--genesis",
                str(tmp_path / "genesis.json"),
                "--listen",
                f"127.0.0.1:{busy}",
                "--api",
                "127.0.0.1:0",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert res.returncode == 1 and "choose free --listen/--api ports" in res.stderr
    env = {**os.environ, "NETDIAG_NODE_BOGUS": "1"}
    res = subprocess.run([*NETDIAG, "node", "run"], capture_output=True, text=True, env=env)
    assert res.returncode == 2 and "NETDIAG_NODE_BOGUS" in res.stderr
