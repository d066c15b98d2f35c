"""A lab cluster of real `netdiag node run` processes on loopback, driven from outside.

The bench talks to the nodes only through their command line, REST API and process boundary
(RSS from /proc via psutil). Nodes listen on 127.0.0.1; attackers connect from other loopback
addresses (127.0.0.0/8 is all local on Linux) so a per-IP limit or ban aimed at an attacker
never hits the honest validators' own connections.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netdiag.bench.attack.wire import Target
from netdiag.errors import NetdiagError
from netdiag.nodeapi import NodeApi

NODE_CLI = [sys.executable, "-m", "netdiag.cli.main", "node"]
# A node outlives a bench killed with -9 unless the kernel signals it when its parent dies
# (setpriv execs the node: same pid, so RSS is still read from the node itself).
DIE_WITH_PARENT = ["setpriv", "--pdeathsig", "TERM", "--"] if shutil.which("setpriv") else []


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def http_json(port: int, path: str, timeout_s: float = 2.0) -> Any:
    """GET a node's API; None when it does not answer in time (down, hung, overloaded)."""
    try:
        with NodeApi(None, port, timeout_s=timeout_s) as api:
            return api.get_json(path)
    except OSError:
        return None


def http_text(port: int, path: str, timeout_s: float = 2.0) -> str | None:
    try:
        with NodeApi(None, port, timeout_s=timeout_s) as api:
            code, body = api.request("GET", path)
    except OSError:
        return None
    return body.decode(errors="replace") if code == 200 else None


@dataclass
class NodeProc:
    index: int
    name: str
    data_dir: Path
    genesis: Path
    key: Path
    p2p_port: int
    api_port: int
    peers: list[int]
    log: Path
    tls: bool = True
    proc: subprocess.Popen[bytes] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    def argv(self) -> list[str]:
        argv = [
            *NODE_CLI,
            "run",
            "--data-dir",
            str(self.data_dir),
            "--genesis",
            str(self.genesis),
            "--key",
            str(self.key),
            "--listen",
            f"127.0.0.1:{self.p2p_port}",
            "--api",
            f"127.0.0.1:{self.api_port}",
            "--tls" if self.tls else "--no-tls",
        ]
        for p in self.peers:
            argv += ["--peer", f"127.0.0.1:{p}"]
        return argv

    def start(self, extra_env: dict[str, str] | None = None) -> None:
        self.extra_env = dict(extra_env or {})
        env = {k: v for k, v in os.environ.items() if not k.startswith("NETDIAG_NODE_")}
        env.update(self.extra_env)
        with self.log.open("ab") as logf:
            self.proc = subprocess.Popen(
                [*DIE_WITH_PARENT, *self.argv()], stdout=subprocess.DEVNULL, stderr=logf, env=env
            )

    def stop(self, timeout_s: float = 10.0) -> None:
        p = self.proc
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss_bytes(self) -> int | None:
        if not self.alive():
            return None
        import psutil

        assert self.proc is not None
        try:
            return int(psutil.Process(self.proc.pid).memory_info().rss)
        except psutil.Error:
            return None

    def status(self, timeout_s: float = 2.0) -> dict[str, Any] | None:
        doc = http_json(self.api_port, "/status", timeout_s)
        return doc if isinstance(doc, dict) else None

    def height(self) -> int | None:
        st = self.status()
        return int(st["height"]) if st else None

    def log_size(self) -> int:
        try:
            return self.log.stat().st_size
        except OSError:
            return 0

    def log_since(self, offset: int) -> str:
        try:
            with self.log.open("rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""


@dataclass
class Cluster:
    """N validators of one fresh genesis, fully meshed by bootstrap peers."""

    name: str
    workdir: Path
    nodes: list[NodeProc]
    network_id: str
    genesis_hash: bytes
    slot_ms: int

    @classmethod
    def create(
        cls, workdir: Path, name: str, validators: int, slot_ms: int, tls: bool = True
    ) -> Cluster:
        gen_dir = workdir / name / "genesis"
        network_id = f"nd-attack-{name}"
        argv = [
            *NODE_CLI,
            "genesis",
            "--validators",
            str(validators),
            "--lab-seed",
            f"bench-attack-{name}-{os.getpid()}-{time.time_ns()}",
            "--network-id",
            network_id,
            "--slot-ms",
            str(slot_ms),
            "--timestamp-ms",
            str(int(time.time() * 1000)),
            "--out",
            str(gen_dir),
            "--json",
        ]
        res = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if res.returncode != 0:
            raise NetdiagError(
                f"`netdiag node genesis` failed (exit {res.returncode}): "
                f"{res.stderr.strip()[-300:]}",
                "check that the reference node runs (`netdiag node --help`)",
            )
        doc = json.loads(res.stdout)
        ports = free_ports(2 * validators)
        p2p, api = ports[:validators], ports[validators:]
        nodes = [
            NodeProc(
                index=i,
                name=f"{name}-{i}",
                data_dir=workdir / name / f"node-{i}",
                genesis=Path(doc["genesis"]),
                key=Path(doc["validators"][i]["key"]),
                p2p_port=p2p[i],
                api_port=api[i],
                peers=[p for j, p in enumerate(p2p) if j != i],
                log=workdir / name / f"node-{i}.log",
                tls=tls,
            )
            for i in range(validators)
        ]
        return cls(name, workdir, nodes, network_id, bytes.fromhex(doc["genesis_hash"]), slot_ms)

    def start(self) -> None:
        for n in self.nodes:
            n.start()

    def stop(self) -> None:
        for n in self.nodes:
            with contextlib.suppress(Exception):
                n.stop()

    def wait_producing(self, timeout_s: float, min_height: int = 2) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            dead = [n.name for n in self.nodes if not n.alive()]
            if dead:
                raise NetdiagError(
                    f"node {dead[0]} exited at start-up: {self.tail(dead[0])}",
                    "see the node log in the bench's work directory",
                )
            hs = self.heights()
            if all(h is not None and h >= min_height for h in hs):
                return
            time.sleep(0.2)
        raise NetdiagError(
            f"cluster {self.name} did not reach height {min_height} in {timeout_s:.0f} s "
            f"(heights {self.heights()})",
            "the machine may be overloaded: retry, or see the node logs",
        )

    def heights(self) -> list[int | None]:
        return [n.height() for n in self.nodes]

    def max_height(self) -> int | None:
        hs = [h for h in self.heights() if h is not None]
        return max(hs) if hs else None

    def tail(self, name: str, lines: int = 3) -> str:
        node = next(n for n in self.nodes if n.name == name)
        text = node.log_since(max(0, node.log_size() - 4000))
        return " | ".join(text.splitlines()[-lines:])[-600:]

    def target(self, i: int) -> Target:
        n = self.nodes[i]
        return Target("127.0.0.1", n.p2p_port, n.tls, self.network_id, self.genesis_hash)

    def verify_chains(self) -> list[dict[str, Any]]:
        """`netdiag node verify` on every (stopped) node's store, all at once: did any attack
        get an invalid block stored? One row per node."""
        verify = [*NODE_CLI, "verify", "--json", "--data-dir"]
        procs = [
            subprocess.Popen(
                [*verify, str(n.data_dir), "--genesis", str(n.genesis)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for n in self.nodes
        ]
        rows: list[dict[str, Any]] = []
        for n, proc in zip(self.nodes, procs, strict=True):
            out, err = proc.communicate(timeout=600)
            try:
                doc = json.loads(out.strip().splitlines()[-1])
            except (IndexError, ValueError):
                doc = {"ok": False, "reason": f"exit {proc.returncode}: {err.strip()[-120:]}"}
            rows.append(
                {
                    "cluster": self.name,
                    "node": n.name,
                    "chain_valid": bool(doc.get("ok")),
                    "blocks_checked": doc.get("checked"),
                    "bad_height": doc.get("bad_height"),
                    "reason": doc.get("reason"),
                }
            )
        return rows
