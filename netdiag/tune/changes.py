"""The kinds of change tune makes. Each knows its old and new value, how to apply and revert
itself, and how to (de)serialise for the journal. Revert is idempotent: it restores the old
value whether or not the apply got that far (the journal is written before any apply)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

from netdiag.errors import InputError, NetdiagError
from netdiag.kernel import sysctl
from netdiag.tune import sockops
from netdiag.tune.env import TuneEnv


@dataclass
class SysctlChange:
    kind: ClassVar[str] = "sysctl"
    key: str
    old: str
    new: str
    netns: str | None = None
    reason: str = ""

    @property
    def ident(self) -> str:
        return f"sysctl:{self.netns or ''}:{self.key}"

    @property
    def scope(self) -> str:
        return f"netns {self.netns}" if self.netns else "host"

    @property
    def target(self) -> str:
        return self.key

    def live(self, env: TuneEnv) -> str:
        try:
            return sysctl.read(self.key, self.netns, env.host)
        except NetdiagError as e:
            return f"<unreadable: {e.what}>"

    def apply(self, env: TuneEnv) -> None:
        sysctl.write(self.key, self.new, self.netns, env.host)
        # record what the kernel holds, not what was written: a vector written short keeps
        # its other elements, and some handlers clamp or re-format
        self.new = sysctl.read(self.key, self.netns, env.host)

    def revert(self, env: TuneEnv) -> str | None:
        if self.netns is not None and not (env.host.run_netns / self.netns).exists():
            return f"netns {self.netns} is gone; nothing to restore"
        sysctl.write(self.key, self.old, self.netns, env.host)
        return None


@dataclass
class SockopsChange:
    """A cc_sockops program attached to a cgroup through a BPF link pinned at `pin`."""

    kind: ClassVar[str] = "sockops"
    cgroup: str
    cc: str
    ports: list[int]
    pin: str
    reason: str = ""
    old: str = "none"

    @property
    def ident(self) -> str:
        return f"sockops:{self.cgroup}:{','.join(map(str, self.ports))}"

    @property
    def scope(self) -> str:
        return f"cgroup {self.cgroup}"

    @property
    def target(self) -> str:
        ports = ",".join(map(str, self.ports)) if self.ports else "all ports"
        return f"TCP_CONGESTION for port {ports}" if self.ports else f"TCP_CONGESTION ({ports})"

    @property
    def new(self) -> str:
        return self.cc

    def live(self, env: TuneEnv) -> str:
        return self.cc if Path(self.pin).exists() else "none"

    def apply(self, env: TuneEnv) -> None:
        sockops.attach(self.cc, self.ports, self.cgroup, self.pin, env)

    def revert(self, env: TuneEnv) -> str | None:
        return sockops.detach(Path(self.pin))


@dataclass
class RlimitChange:
    kind: ClassVar[str] = "rlimit"
    pid: int
    create_time: float
    old_soft: int
    old_hard: int
    new_soft: int
    new_hard: int
    name: str = ""
    reason: str = ""

    @property
    def ident(self) -> str:
        return f"rlimit:{self.pid}:{self.create_time}"

    @property
    def scope(self) -> str:
        return f"pid {self.pid} ({self.name})"

    @property
    def target(self) -> str:
        return "RLIMIT_NOFILE (soft hard)"

    @property
    def old(self) -> str:
        return f"{self.old_soft} {self.old_hard}"

    @property
    def new(self) -> str:
        return f"{self.new_soft} {self.new_hard}"

    def live(self, env: TuneEnv) -> str:
        from netdiag.tune import rlimits

        got = rlimits.get(self.pid, self.create_time)
        return "<process gone>" if got is None else f"{got[0]} {got[1]}"

    def apply(self, env: TuneEnv) -> None:
        from netdiag.tune import rlimits

        rlimits.set_nofile(self.pid, self.create_time, self.new_soft, self.new_hard)

    def revert(self, env: TuneEnv) -> str | None:
        from netdiag.tune import rlimits

        if rlimits.get(self.pid, self.create_time) is None:
            return f"pid {self.pid} is gone; nothing to restore"
        rlimits.set_nofile(self.pid, self.create_time, self.old_soft, self.old_hard)
        return None


@dataclass
class FileChange:
    """A file netdiag writes (the --persist sysctl.d file); `old` None means it did not exist."""

    kind: ClassVar[str] = "file"
    path: str
    old_content: str | None
    new_content: str
    reason: str = ""

    @property
    def ident(self) -> str:
        return f"file:{self.path}"

    @property
    def scope(self) -> str:
        return "boot"

    @property
    def target(self) -> str:
        return self.path

    @property
    def old(self) -> str:
        return "absent" if self.old_content is None else f"{len(self.old_content)} bytes"

    @property
    def new(self) -> str:
        return f"{len(self.new_content)} bytes"

    def live(self, env: TuneEnv) -> str:
        p = Path(self.path)
        return f"{p.stat().st_size} bytes" if p.exists() else "absent"

    def apply(self, env: TuneEnv) -> None:
        _write_atomic(Path(self.path), self.new_content)

    def revert(self, env: TuneEnv) -> str | None:
        p = Path(self.path)
        if self.old_content is None:
            p.unlink(missing_ok=True)
        else:
            _write_atomic(p, self.old_content)
        return None


Change = SysctlChange | SockopsChange | RlimitChange | FileChange
KINDS: dict[str, type[Any]] = {
    c.kind: c for c in (SysctlChange, SockopsChange, RlimitChange, FileChange)
}


def to_dict(c: Change) -> dict[str, Any]:
    return {"kind": c.kind, **asdict(c)}


def from_dict(d: dict[str, Any]) -> Change:
    d = dict(d)
    kind = d.pop("kind", None)
    cls = KINDS.get(str(kind))
    if cls is None:
        raise InputError(
            f"journal holds an unknown change kind {kind!r}",
            "was it written by a newer netdiag? revert with that version",
        )
    obj: Change = cls(**d)
    return obj


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


write_atomic = _write_atomic
