"""The reference node as `bench p2p` drives it: through its command line and REST API only.

Genesis (`netdiag node genesis`), one `netdiag node run` per lab namespace, and what the bench
reads from outside the process (CPU time via psutil, the tail of its log).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netdiag.bench.nodeclient import NodeApi
from netdiag.errors import NetdiagError

P2P_PORT = 7600
API_PORT = 7601


@dataclass
class NodeRun:
    name: str
    ns: str
    data_dir: Path
    key: Path | None
    peers: list[str]
    proc: subprocess.Popen[Any] | None = None
    api: NodeApi | None = None
    cpu_start_s: float | None = None
    cpu_end_s: float | None = None
    metrics_start: dict[str, float] = field(default_factory=dict)
    metrics_end: dict[str, float] = field(default_factory=dict)
    in_load: bool = True  # took part in the load phase (delivery is expected)
    env: dict[str, str] = field(default_factory=dict)  # NETDIAG_NODE_* for this node only

    def client(self) -> NodeApi:
        if self.api is None:
            self.api = NodeApi(self.ns, API_PORT)
        return self.api


def node_command() -> list[str]:
    return [sys.executable, "-m", "netdiag.cli.main", "node"]


def node_run_argv(run: NodeRun, genesis: Path, addr: str, tls: bool) -> list[str]:
    """`netdiag node run` with everything on its command line (nothing inherited by accident)."""
    argv = [
        *node_command(),
        "run",
        "--data-dir",
        str(run.data_dir),
        "--genesis",
        str(genesis),
        "--listen",
        f"{addr}:{P2P_PORT}",
        "--api",
        f"127.0.0.1:{API_PORT}",
        "--tls" if tls else "--no-tls",
    ]
    if run.key is not None:
        argv += ["--key", str(run.key)]
    for peer in run.peers:
        argv += ["--peer", peer]
    return argv


def node_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("NETDIAG_NODE_")}


def make_genesis(out: Path, validators: int, seed: int, slot_ms: int) -> Path:
    """`netdiag node genesis` writes genesis.json and validator-<i>.key into `out`."""
    argv = [
        *node_command(),
        "genesis",
        "--validators",
        str(validators),
        "--lab-seed",
        str(seed),
        "--slot-ms",
        str(slot_ms),
        "--out",
        str(out),
    ]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if res.returncode != 0 or not (out / "genesis.json").exists():
        raise NetdiagError(
            f"`{' '.join(argv[2:])}` failed (exit {res.returncode}): {res.stderr.strip()[-400:]}",
            "check that the reference node is installed (`netdiag node --help`)",
        )
    return out / "genesis.json"


def tail(log: Path, lines: int = 2) -> str:
    try:
        return " | ".join(log.read_text(errors="replace").splitlines()[-lines:])[-600:]
    except OSError:
        return "no log"


def pids_cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds of these processes (0 for any that are gone)."""
    import psutil

    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
    return total


def cpu_s(r: NodeRun) -> float | None:
    if r.proc is None:
        return None
    try:
        import psutil

        t = psutil.Process(r.proc.pid).cpu_times()
        return float(t.user + t.system)
    except Exception:  # the process is gone: no figure rather than a wrong one
        return None
