from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from netdiag.errors import PrivilegeError
from netdiag.lab import Lab, two_node

EXAMPLES = Path(__file__).resolve().parents[3] / "netdiag/lab/examples"


def test_lab_without_privileges_says_so() -> None:
    """As a normal user (root drops to nobody with setpriv), `lab up` names the capability."""
    if os.geteuid() != 0:
        with pytest.raises(PrivilegeError, match="CAP_"):
            Lab.start(two_node(0.01, 0))
        return
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux) to drop root to an unprivileged user")
    home = Path(tempfile.mkdtemp(prefix="nd-labpriv-"))
    try:
        os.chmod(home, 0o777)
        env = {
            **os.environ,
            "HOME": str(home),
            "NETDIAG_STATE": str(home / "state"),
            "NETDIAG_CACHE": str(home / "cache"),
        }
        p = subprocess.run(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
                str(Path(sys.executable).with_name("netdiag")),
                "lab",
                "up",
                str(EXAMPLES / "wan.toml"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert p.returncode == 3, p.stdout + p.stderr
        assert p.stderr.startswith("netdiag: error: ") and "CAP_" in p.stderr, p.stderr
        assert "Traceback" not in p.stderr
    finally:
        shutil.rmtree(home, ignore_errors=True)
