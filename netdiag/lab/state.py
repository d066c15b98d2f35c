"""The lab state file: everything a lab creates is recorded here *before* it is created.

One JSON file per lab under `<state_dir>/labs/NAME.json`, plus a directory `NAME/` with the
lab's control FIFOs, link statistics and process logs. `lab down --all` works from these
files alone, so it recovers after the supervisor was killed with SIGKILL.

Processes are recorded as (pid, start time in clock ticks since boot): a pid that was
reused by an unrelated process after a crash has a different start time and is left alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from netdiag.errors import InputError
from netdiag.kernel.host import state_dir

Record = dict[str, Any]


def labs_dir(root: Path | None = None) -> Path:
    return (root or state_dir()) / "labs"


def path_of(name: str, root: Path | None = None) -> Path:
    return labs_dir(root) / f"{name}.json"


def work_dir(name: str, root: Path | None = None) -> Path:
    return labs_dir(root) / name


def proc_start(pid: int) -> int | None:
    """Start time of pid (field 22 of /proc/pid/stat), None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) may contain spaces and parentheses: split after the last ')'
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


def alive(proc: Record) -> bool:
    start = proc_start(int(proc["pid"]))
    return start is not None and start == proc.get("start") and not _zombie(int(proc["pid"]))


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2 :].startswith("Z")


def proc_record(pid: int, kind: str, **extra: Any) -> Record:
    return {"pid": pid, "start": proc_start(pid), "kind": kind, **extra}


@contextlib.contextmanager
def locked(name: str, root: Path | None = None) -> Iterator[None]:
    d = labs_dir(root)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / ".lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def read(name: str, root: Path | None = None) -> Record | None:
    try:
        rec: Record = json.loads(path_of(name, root).read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError:
        # a torn write is impossible (rename), but a hand-edited file may be broken
        return {"name": name, "corrupt": True, "namespaces": [], "procs": [], "links": []}
    return rec


def write(rec: Record, root: Path | None = None) -> None:
    p = path_of(rec["name"], root)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(rec, indent=1, sort_keys=True))
    os.replace(tmp, p)


def update(name: str, root: Path | None = None, **changes: Any) -> Record:
    """Read-modify-write under the lock; list values given as `add_X=[...]` are appended to X."""
    with locked(name, root):
        rec = read(name, root) or {"name": name, "namespaces": [], "procs": [], "links": []}
        for k, v in changes.items():
            if k.startswith("add_"):
                rec.setdefault(k[4:], []).extend(v)
            else:
                rec[k] = v
        write(rec, root)
        return rec


def remove(name: str, root: Path | None = None) -> None:
    with contextlib.suppress(FileNotFoundError):
        path_of(name, root).unlink()


def names(root: Path | None = None) -> list[str]:
    d = labs_dir(root)
    if not d.is_dir():
        return []
    return sorted(p.stem for p in d.glob("*.json"))


def refuse_running(name: str, root: Path | None = None) -> None:
    """InputError if lab `name` is up with a live supervisor (the name is taken)."""
    rec = read(name, root)
    sup = rec.get("supervisor") if rec else None
    if sup and alive(sup):
        raise InputError(
            f"lab {name} is already up (supervisor pid {sup['pid']})",
            f"`netdiag lab down {name}` first, or give the lab another name with --name",
        )
