"""Remove what a lab's state file recorded — from any process, including after a SIGKILL.

Only things the record names are touched, and only namespaces with the `nd-` prefix; a pid is
signalled only while its start time still matches the record (no pid-reuse accidents).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from netdiag.kernel import netns
from netdiag.lab import state


def pids_in_netns(name: str) -> list[int]:
    """Processes whose network namespace is `name` (what `ip netns pids` reports)."""
    try:
        target = os.stat(netns.path_of(name))
    except OSError:
        return []
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
            out.append(int(entry))
    return out


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _wait_gone(check: Any, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not check():
            return True
        time.sleep(0.05)
    return not check()


def destroy(rec: dict[str, Any], root: Path | None = None) -> dict[str, Any]:
    """Stop the lab's processes, delete its namespaces, drop its state. Returns what was done."""
    me = os.getpid()
    procs = [
        p for p in [*rec.get("procs", []), *rec.get("links", [])] if "pid" in p and p["pid"] != me
    ]
    live = [int(p["pid"]) for p in procs if state.alive(p)]
    _signal_all(live, signal.SIGTERM)
    _wait_gone(lambda: any(state.alive(p) for p in procs), 3.0)
    stubborn = [int(p["pid"]) for p in procs if state.alive(p)]
    _signal_all(stubborn, signal.SIGKILL)
    removed = []
    for ns in rec.get("namespaces", []):
        if not ns.startswith(netns.PREFIX) or not netns.exists(ns):
            continue
        # anything still inside one of our namespaces was started in it for the lab
        inside = [p for p in pids_in_netns(ns) if p != me]
        _signal_all(inside, signal.SIGKILL)
        _wait_gone(
            lambda ns=ns: [p for p in pids_in_netns(ns) if p != me and state.proc_start(p)], 2.0
        )
        netns.delete(ns)
        removed.append(ns)
    work = rec.get("work")
    if work:
        w = Path(work)
        # keep what says something (node and forwarder logs, node stores); drop control
        # FIFOs, stats, empty logs, and the directory itself when nothing is left in it
        for f in [*w.glob("l*.ctl"), *w.glob("l*.stats.json")]:
            with contextlib.suppress(OSError):
                f.unlink()
        for f in [*w.glob("l*.log"), *w.glob("logs/*.log")]:
            with contextlib.suppress(OSError):
                if f.stat().st_size == 0:
                    f.unlink()
        for d in (w / "logs", w):
            with contextlib.suppress(OSError):
                d.rmdir()  # only when empty
    state.remove(rec["name"], root)
    return {"lab": rec["name"], "namespaces": removed, "killed": live + stubborn}


def down(name: str, root: Path | None = None, timeout: float = 15.0) -> dict[str, Any] | None:
    """Stop lab `name`: its supervisor tears down on SIGTERM; if dead or stuck, do it here."""
    rec = state.read(name, root)
    if rec is None:
        return None
    sup = rec.get("supervisor")
    if sup and sup.get("pid") != os.getpid() and state.alive(sup):
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(sup["pid"]), signal.SIGTERM)
        if _wait_gone(lambda: state.path_of(name, root).exists(), timeout):
            return {"lab": name, "namespaces": rec.get("namespaces", []), "by": "supervisor"}
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(sup["pid"]), signal.SIGKILL)
    rec = state.read(name, root)
    return destroy(rec, root) if rec else None


def down_all(root: Path | None = None, stale_only: bool = False) -> list[dict[str, Any]]:
    """Every recorded lab; with stale_only, only those whose supervisor is gone (kill -9)."""
    out = []
    for name in state.names(root):
        if stale_only:
            rec = state.read(name, root) or {}
            sup = rec.get("supervisor")
            if sup and state.alive(sup):
                continue
        r = down(name, root)
        if r:
            out.append(r)
    return out


def purge_logs(name: str, root: Path | None = None) -> None:
    shutil.rmtree(state.work_dir(name, root), ignore_errors=True)
