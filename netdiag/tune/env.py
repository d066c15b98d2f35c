"""Where tune reads and writes: passed in, so tests point it at scratch paths."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from netdiag.kernel.host import REAL, HostPaths, state_dir

PAUSE_ENV = "NETDIAG_TUNE_TEST_PAUSE_AFTER"
"""Test hook: after applying this many changes, print a marker and wait to be killed."""


@dataclass(frozen=True)
class TuneEnv:
    host: HostPaths = REAL
    state: Path = field(default_factory=lambda: state_dir() / "tune")
    sysctl_d: Path = Path("/etc/sysctl.d")
    pause_after: int | None = None

    @property
    def pin_subdir(self) -> str:
        """Pins live in bpffs under netdiag/tune/<journal id>: one directory per journal, so
        a revert can treat any pin there that its journal does not record as an orphan
        without touching pins of another journal (tests and benches use their own)."""
        digest = hashlib.sha256(str(self.state.resolve()).encode()).hexdigest()[:10]
        return f"netdiag/tune/{digest}"

    @classmethod
    def from_environ(cls) -> TuneEnv:
        pause = os.environ.get(PAUSE_ENV)
        sysctl_d = Path(os.environ.get("NETDIAG_SYSCTL_D", "/etc/sysctl.d"))
        return cls(
            state=state_dir() / "tune", sysctl_d=sysctl_d, pause_after=int(pause) if pause else None
        )
