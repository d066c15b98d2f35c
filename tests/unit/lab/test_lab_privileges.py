from __future__ import annotations

import os
from pathlib import Path

import pytest

from netdiag.errors import PrivilegeError
from netdiag.lab import Lab, two_node
from tests.cli import missing_setpriv, run_netdiag

EXAMPLES = Path(__file__).resolve().parents[3] / "netdiag/lab/examples"


def test_lab_without_privileges_says_so() -> None:
    """As a normal user (root drops to nobody with setpriv), `lab up` names the capability."""
    if os.geteuid() != 0:
        with pytest.raises(PrivilegeError, match="CAP_"):
            Lab.start(two_node(0.01, 0))
        return
    if reason := missing_setpriv():
        pytest.skip(reason)
    p = run_netdiag("lab", "up", str(EXAMPLES / "wan.toml"), unprivileged=True, timeout=60)
    assert p.returncode == 3, p.stdout + p.stderr
    assert p.stderr.startswith("netdiag: error: ") and "CAP_" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
