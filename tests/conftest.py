"""Shared test helpers: capability gates that skip with the exact missing capability."""

from __future__ import annotations

import os
import shutil
import signal
import threading
from types import FrameType

import pytest


def _term_as_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt("SIGTERM")


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM (a job's timeout, `timeout`, a killed CI step) unwinds like Ctrl-C: the test in
    flight leaves through its `with` blocks and fixtures, so its namespaces, links and BPF
    attachments go with it. Killed by the default action instead, a lab test left nd-tune-va/vb
    behind and the next run on the host failed on them."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _term_as_interrupt)


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
