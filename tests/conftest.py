"""Shared test helpers: capability gates that skip with the exact missing capability."""

from __future__ import annotations

import os
import shutil


def missing_root() -> str | None:
    if os.geteuid() != 0:
        return "needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_BPF): run `sudo make test`"
    return None


def missing_tool(*tools: str) -> str | None:
    absent = [t for t in tools if shutil.which(t) is None]
    if absent:
        return f"needs {', '.join(absent)} on PATH: run `make setup`"
    return None


def missing_bcc() -> str | None:
    try:
        import bcc  # noqa: F401
    except ImportError as e:
        return f"needs the bcc Python module ({e}): run `make setup`"
    return None
