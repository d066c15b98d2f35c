"""Reading the shipped systemd units: their files, ExecStart command lines and settings."""

from __future__ import annotations

import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SYSTEMD_DIR = ROOT / "deploy" / "systemd"
INSTALLED_NETDIAG = "/usr/local/bin/netdiag"


def unit_files() -> list[Path]:
    return sorted(SYSTEMD_DIR.glob("*.service"))


def settings(unit: Path, key: str) -> list[str]:
    """Every value of KEY in the unit (systemd allows repeats), comments skipped."""
    out = []
    for line in unit.read_text().splitlines():
        k, sep, v = line.partition("=")
        if sep and not line.lstrip().startswith("#") and k.strip() == key:
            out.append(v.strip())
    return out


def exec_argv(unit: Path, instance: str = "main") -> list[str]:
    """The netdiag arguments of the unit's ExecStart, with %i set to INSTANCE."""
    (line,) = settings(unit, "ExecStart")
    argv = shlex.split(line.replace("%i", instance))
    assert argv[0] == INSTALLED_NETDIAG, argv
    return argv[1:]


def capabilities(unit: Path) -> list[str]:
    (line,) = settings(unit, "CapabilityBoundingSet")
    return line.split()
