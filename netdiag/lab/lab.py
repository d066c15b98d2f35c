"""A running lab: namespaces, links, supervised processes — owned, recorded, torn down.

Python API (what benchmarks and other commands use)::

    from netdiag.lab import Lab, two_node
    with Lab.up(two_node(delay_s=0.05, rate_bps=100_000_000, loss=0.01)) as lab:
        lab.exec("a", ["ping", "-c", "3", lab.addr("b")])
        srv = lab.popen("b", ["iperf3", "-s", "-1"])
        lab.set_link("a", "b", delay_s=0.1)
        meta = lab.metadata()          # {"engine": "userspace", "links": [...], ...}

The process that calls `Lab.up` is the lab's supervisor: leaving the `with` block, an
exception or Ctrl-C tears everything down; after a SIGKILL, `netdiag lab down --all`
(`netdiag.lab.teardown.down_all`) removes what the state file recorded.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from netdiag.errors import InputError, NetdiagError
from netdiag.kernel import caps, netns
from netdiag.lab import addressing, cluster, engines, state, teardown
from netdiag.lab import calibrate as calibration
from netdiag.lab.engines import veth
from netdiag.lab.engines.base import LinkEnds, LinkEngine
from netdiag.lab.live import set_link_record
from netdiag.lab.topology import LinkShape, NodeSpec, Topology, load, validate


def ns_name(lab: str, node: str) -> str:
    return f"{netns.PREFIX}{lab}-{node}"


def dev_name(peer: str) -> str:
    return f"ndl-{peer}"[:15]


@dataclass
class Supervised:
    """A long-running process of the lab (node command or `popen`): logs kept, exits noticed."""

    node: str
    argv: list[str]
    proc: subprocess.Popen[Any]
    log: Path | None
    kind: str
    reported: bool = False

    def tail(self, lines: int = 5) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Lab:
    topology: Topology
    engine: LinkEngine
    root: Path | None = None
    shapes: dict[int, LinkShape] = field(default_factory=dict)
    forwarders: list[subprocess.Popen[bytes]] = field(default_factory=list)
    processes: list[Supervised] = field(default_factory=list)
    pending_roles: list[str] = field(default_factory=list)
    node_argvs: dict[str, list[str]] = field(default_factory=dict)
    calibrated: dict[int, dict[str, Any]] = field(default_factory=dict)
    _reported_links: set[int] = field(default_factory=set)
    _down: bool = False

    # -- lifecycle ---------------------------------------------------------------------------
    @classmethod
    @contextlib.contextmanager
    def up(
        cls,
        topology: Topology | str | Path,
        *,
        engine: str | None = None,
        state_root: Path | None = None,
        calibrate: bool = True,
    ) -> Iterator[Lab]:
        """Bring a lab up for the duration of a `with` block (Ctrl-C safe)."""
        lab = cls.start(topology, engine=engine, state_root=state_root, calibrate=calibrate)
        try:
            yield lab
        finally:
            lab.down()

    @classmethod
    def start(
        cls,
        topology: Topology | str | Path,
        *,
        engine: str | None = None,
        state_root: Path | None = None,
        calibrate: bool = True,
    ) -> Lab:
        """Bring a lab up; the caller must call `down()` (prefer `Lab.up` as a context manager).

        With `calibrate`, each link's own latency is measured and subtracted from its delay
        before any node process starts (`calibrate.py`); the residual is in `metadata()`."""
        topo = topology if isinstance(topology, Topology) else load(topology)
        validate(topo)  # a Topology built or renamed in code gets the same checks as a file
        caps.require("CAP_SYS_ADMIN", "CAP_NET_ADMIN", why="building a lab (namespaces, links)")
        veth.check_topology(topo)  # a veth link with delay and no netem: refused before anything
        state.refuse_running(topo.name, state_root)
        existing = state.read(topo.name, state_root)
        if existing is not None:
            teardown.destroy(existing, state_root)  # stale from a kill -9: clean it first
        eng = engines.choose(engine or topo.engine)
        lab = cls(topo, eng, state_root)
        try:
            lab._build(calibrate)
        except BaseException:
            lab.down()
            raise
        return lab

    def _build(self, calibrate_links: bool = True) -> None:
        topo, root = self.topology, self.root
        work = state.work_dir(topo.name, root)
        # a fresh lab each time: the previous run's node stores, genesis and logs go
        for old in ("nodes", "genesis", "logs"):
            shutil.rmtree(work / old, ignore_errors=True)
        (work / "logs").mkdir(parents=True, exist_ok=True)
        spaces = [ns_name(topo.name, n.name) for n in topo.nodes]
        taken = [ns for ns in spaces if netns.exists(ns)]
        if taken:
            # not ours (no state file names it): never adopt, never delete it
            raise NetdiagError(
                f"namespace {taken[0]} exists but no lab records it",
                f"give the lab another name, or remove it with `ip netns del {taken[0]}` "
                "if you know it is a leftover",
            )
        with state.locked(topo.name, root):
            state.write(
                {
                    "name": topo.name,
                    "created": time.time(),
                    "ready": False,
                    "engine": self.engine.name,
                    "source": topo.source,
                    "mtu": topo.mtu,
                    "supervisor": state.proc_record(os.getpid(), "supervisor"),
                    # recorded before they exist: a crash half-way is still recoverable
                    "namespaces": spaces,
                    "nodes": {
                        n.name: {"ns": ns_name(topo.name, n.name), "address": n.address}
                        for n in topo.nodes
                    },
                    "procs": [],
                    "links": [],
                    "work": str(work),
                },
                root,
            )
        for n in topo.nodes:
            netns.create(ns_name(topo.name, n.name))
            netns.run_in(ns_name(topo.name, n.name), partial(addressing.setup_node, n))
        link_recs = []
        for i, ln in enumerate(topo.links):
            ends = LinkEnds(
                ns_a=ns_name(topo.name, ln.a),
                dev_a=dev_name(ln.b),
                ns_b=ns_name(topo.name, ln.b),
                dev_b=dev_name(ln.a),
                work=work,
                tag=f"l{i}",
                mtu=topo.mtu,
                seed=topo.seed * 1_000_003 + i,
            )
            eng = engines.for_link(self.engine.name, ln.kind)
            proc, extra = eng.create(ends, ln.shape)
            rec: dict[str, Any] = {
                "a": ln.a,
                "b": ln.b,
                "ns_a": ends.ns_a,
                "dev_a": ends.dev_a,
                "ns_b": ends.ns_b,
                "dev_b": ends.dev_b,
                "addr_a": addressing.link_addresses(i)[0],
                "addr_b": addressing.link_addresses(i)[1],
                "shape": ln.shape.as_dict(topo.mtu),
                "kind": ln.kind,
                **extra,
            }
            if proc is not None:
                self.forwarders.append(proc)
                rec.update(state.proc_record(proc.pid, "link"))
            state.update(topo.name, root, add_links=[rec])
            link_recs.append(rec)
            self.shapes[i] = ln.shape
            a, b = addressing.link_addresses(i)
            netns.run_in(ends.ns_a, partial(addressing.link_addr, ends.dev_a, a))
            netns.run_in(ends.ns_b, partial(addressing.link_addr, ends.dev_b, b))
        addressing.install_routes(topo, link_recs, partial(ns_name, topo.name))
        if calibrate_links:
            self.calibrate()  # idle links, before any node process sends a packet
        if any(n.role == "node" for n in topo.nodes):
            if cluster.node_available():
                self.node_argvs = cluster.node_argvs(topo, work)
            else:
                self.pending_roles = [n.name for n in topo.nodes if n.role == "node"]
        for n in topo.nodes:
            self._start_node(n, work / "logs")
        state.update(topo.name, root, ready=True, pending_roles=self.pending_roles)

    def _start_node(self, n: NodeSpec, logs: Path) -> None:
        if n.role == "node":
            if n.name not in self.node_argvs:
                return  # pending: reported by `lab up` / `lab status`
            argv = self.node_argvs[n.name]
        elif n.command is None:
            return
        else:
            argv = ["sh", "-c", n.command] if isinstance(n.command, str) else list(n.command)
        env = {**os.environ, **dict(n.env)}
        self.popen(n.name, argv, log=logs / f"{n.name}.log", kind="node", env=env)

    def down(self) -> None:
        """Stop every process, remove every namespace and link, forget the lab. Idempotent."""
        if self._down:
            return
        self._down = True
        # ignore a second Ctrl-C (or the SIGTERM of `lab down`) while tearing down: a
        # half-removed lab is worse than a slow exit
        main = _main_thread()
        old = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
        old_term = signal.signal(signal.SIGTERM, signal.SIG_IGN) if main else None
        try:
            for s in self.processes:
                _stop(s.proc)
            for p in self.forwarders:
                with contextlib.suppress(OSError):
                    if p.stdin:
                        p.stdin.close()  # EOF: the forwarder exits and its TUNs vanish
            for p in self.forwarders:
                _stop(p, grace=2.0)
            rec = state.read(self.topology.name, self.root)
            if rec is not None:
                teardown.destroy(rec, self.root)
        finally:
            if old is not None:
                signal.signal(signal.SIGINT, old)
            if old_term is not None:
                signal.signal(signal.SIGTERM, old_term)

    # -- using it -----------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.topology.name

    def ns(self, node: str) -> str:
        self.topology.node(node)
        return ns_name(self.name, node)

    def addr(self, node: str) -> str:
        """The node's own address (on lo, routed over the links)."""
        return self.topology.node(node).address

    def argv(self, node: str, argv: Sequence[str]) -> list[str]:
        """argv that runs `argv` inside the node's namespace."""
        return ["ip", "netns", "exec", self.ns(node), *argv]

    def exec(
        self,
        node: str,
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        check: bool = False,
        **kw: Any,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in the node's namespace to completion; output captured as text."""
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        try:
            return subprocess.run(self.argv(node, argv), timeout=timeout, check=check, **kw)
        except FileNotFoundError as e:
            raise NetdiagError(f"cannot run {argv[0]}: {e}", "install it") from e

    def popen(
        self,
        node: str,
        argv: Sequence[str],
        *,
        log: Path | None = None,
        kind: str = "popen",
        **kw: Any,
    ) -> subprocess.Popen[Any]:
        """Start a long-running process in the node's namespace; stopped on `down()`.

        With `log`, stdout and stderr go to that file (else the caller's Popen kwargs apply).
        """
        full = self.argv(node, argv)
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("start_new_session", True)  # Ctrl-C reaches the supervisor, which stops it
        if log is not None:
            with open(log, "ab") as f:
                p = subprocess.Popen(full, stdout=f, stderr=subprocess.STDOUT, **kw)
        else:
            p = subprocess.Popen(full, **kw)
        self.processes.append(Supervised(node, list(argv), p, log, kind))
        state.update(
            self.name,
            self.root,
            add_procs=[
                state.proc_record(p.pid, kind, node=node, argv=list(argv), log=str(log or ""))
            ],
        )
        return p

    def node_api(self, node: str, path: str = "/status", timeout: float = 3.0) -> Any:
        """GET a role="node" node's REST API (e.g. "/status") from inside its namespace."""
        with cluster.api_client(self.ns(node), self.topology.node(node).address, timeout) as api:
            return api.get_json(path)

    def dead_links(self) -> list[tuple[str, str, int | None]]:
        """Links whose forwarder exited since the last call: (a, b, exit code); each once."""
        out = []
        for i, p in enumerate(self.forwarders):
            if i not in self._reported_links and p.poll() is not None:
                self._reported_links.add(i)
                ln = self.topology.links[i]
                out.append((ln.a, ln.b, p.returncode))
        return out

    def crashed(self) -> list[Supervised]:
        """Supervised node processes that exited since the last call (each reported once)."""
        out = []
        for s in self.processes:
            if s.kind == "node" and not s.reported and s.proc.poll() is not None:
                s.reported = True
                out.append(s)
        return out

    def set_link(
        self,
        a: str,
        b: str,
        *,
        delay_s: float | None = None,
        jitter_s: float | None = None,
        rate_bps: int | None = None,
        loss: float | None = None,
        queue_pkts: int | None = None,
        calibrate: bool | None = None,
    ) -> LinkShape:
        """Change a live link; returns its new shape. `calibrate` (default: when the delay,
        jitter or rate changed and the lab was calibrated) measures the link again; pass
        False while it carries traffic (the old correction is kept)."""
        i, _ = self.topology.link(a, b)
        old = self.shapes[i]
        shape = old.with_changes(
            delay_s=delay_s, jitter_s=jitter_s, rate_bps=rate_bps, loss=loss, queue_pkts=queue_pkts
        )
        set_link_record(self.name, i, shape, self.root)
        self.shapes[i] = shape
        timing = (old.delay_s, old.jitter_s, old.rate_bps) != (
            shape.delay_s,
            shape.jitter_s,
            shape.rate_bps,
        )
        if calibrate or (calibrate is None and timing and i in self.calibrated):
            self.calibrate([i])
        return shape

    def calibrate(self, links: list[int] | None = None) -> dict[int, dict[str, Any]]:
        """Measure links (default: all) and subtract their own latency; {index: record}."""
        done = calibration.run(self.name, self.root, links)
        self.calibrated.update(done)
        return done

    def link_stats(self, a: str, b: str) -> dict[str, Any]:
        """Forwarder counters of the link a<->b, direction "ab" is a->b as the topology wrote it."""
        i, ln = self.topology.link(a, b)
        rec = (state.read(self.name, self.root) or {}).get("links", [])[i]
        st = engines.for_link(self.engine.name, rec.get("kind")).stats(rec)
        if st and ln.a != a:
            st = {"ab": st.get("ba", {}), "ba": st.get("ab", {})}
        return st

    def sysctl(self, node: str, name: str, value: str | int) -> None:
        """Set a network sysctl (e.g. "net.ipv4.tcp_rmem") inside a node's namespace only.

        Only `net.*` names: those under /proc/sys/net seen from a child namespace are that
        namespace's own; kernel.* or vm.* would change the host, so they are refused.
        """
        if not name.startswith("net.") or "/" in name or ".." in name:
            raise InputError(
                f"{name!r} is not a network-namespace sysctl",
                "only net.* sysctls can be set per lab node (host-wide ones: `netdiag tune`)",
            )
        path = "/proc/sys/" + name.replace(".", "/")

        def write() -> None:
            with open(path, "w") as f:
                f.write(str(value))

        try:
            netns.run_in(self.ns(node), write)
        except OSError as e:
            raise NetdiagError(
                f"cannot set {name} in {self.ns(node)}: {e.strerror}",
                "check the name with `netdiag lab exec NODE -- sysctl -a`",
            ) from e

    def link_devices(self, a: str, b: str) -> tuple[str, str]:
        """(interface in a's namespace, interface in b's namespace) of the link a<->b."""
        self.topology.link(a, b)
        return dev_name(b), dev_name(a)

    def forwarder_pids(self) -> list[int]:
        return [p.pid for p in self.forwarders]

    def metadata(self) -> dict[str, Any]:
        """What every result measured in this lab should carry."""
        return {
            "lab": self.name,
            "engine": self.engine.name,
            "mtu": self.topology.mtu,
            "seed": self.topology.seed,
            "links": [
                {
                    "a": ln.a,
                    "b": ln.b,
                    "kind": ln.kind,
                    **self.shapes[i].as_dict(self.topology.mtu),
                    "calibration": self.calibrated.get(i),
                }
                for i, ln in enumerate(self.topology.links)
            ],
        }


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _stop(p: subprocess.Popen[Any], grace: float = 3.0) -> None:
    if p.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        p.terminate()
    try:
        p.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            p.kill()
        p.wait(timeout=5)
