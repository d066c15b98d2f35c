"""The tune journal: one JSON file per invocation under state_dir()/tune, fsynced before
any change is made, so a revert after kill -9 knows every old value.

Entry status: applying (written before the first change; a crash leaves it here) ->
applied | rolled-back (apply failed and undid itself) -> reverted.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netdiag.errors import InputError, PrivilegeError
from netdiag.tune import changes
from netdiag.tune.changes import Change

LIVE_STATUSES = ("applying", "applied", "revert-incomplete")


@dataclass
class Entry:
    id: int
    created: str
    argv: list[str]
    status: str
    changes: list[Change]
    notes: list[str] = field(default_factory=list)
    reverted: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created": self.created,
            "argv": self.argv,
            "status": self.status,
            "changes": [changes.to_dict(c) for c in self.changes],
            "notes": self.notes,
            "reverted": self.reverted,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Entry:
        return cls(
            id=int(d["id"]),
            created=str(d["created"]),
            argv=list(d.get("argv", [])),
            status=str(d["status"]),
            changes=[changes.from_dict(c) for c in d["changes"]],
            notes=list(d.get("notes", [])),
            reverted=d.get("reverted"),
        )

    @property
    def live(self) -> bool:
        return self.status in LIVE_STATUSES


class Journal:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path_of(self, entry_id: int) -> Path:
        return self.root / f"{entry_id:06d}.json"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One tune at a time per state dir (apply and revert both take it)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            f = open(self.root / ".lock", "w")  # noqa: SIM115 - closed by the with below
        except PermissionError as e:
            raise PrivilegeError(
                f"cannot write the tune journal in {self.root}: {e.strerror}",
                "run as root (the journal records every change for --revert), or point "
                "NETDIAG_STATE at a directory you own",
            ) from e
        with f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise InputError(
                    f"another netdiag tune holds {self.root}/.lock", "wait for it to finish"
                ) from None
            yield

    def entries(self) -> list[Entry]:
        if not self.root.is_dir():
            return []
        out = []
        for p in sorted(self.root.glob("[0-9]*.json")):
            out.append(Entry.from_dict(json.loads(p.read_text())))
        return out

    def get(self, entry_id: int) -> Entry:
        p = self.path_of(entry_id)
        if not p.exists():
            raise InputError(
                f"no tune journal entry {entry_id}", "list them with `netdiag tune --show`"
            )
        return Entry.from_dict(json.loads(p.read_text()))

    def new(self, argv: list[str], chs: list[Change], notes: list[str]) -> Entry:
        ids = [e.id for e in self.entries()]
        entry = Entry(
            id=max(ids, default=0) + 1,
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            argv=argv,
            status="applying",
            changes=chs,
            notes=notes,
        )
        self.save(entry)
        return entry

    def discard(self, entry: Entry) -> None:
        """Forget an entry that changed nothing (bad input the kernel refused, rolled back)."""
        self.path_of(entry.id).unlink(missing_ok=True)

    def save(self, entry: Entry) -> None:
        changes.write_atomic(self.path_of(entry.id), json.dumps(entry.to_dict(), indent=1) + "\n")
