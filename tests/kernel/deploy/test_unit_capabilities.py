"""The capability bounding sets in deploy/systemd are enough: each command runs here under
`setpriv` with exactly its unit's set (and no_new_privs), as systemd would start it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.unit.deploy.units import SYSTEMD_DIR, capabilities, exec_argv

NETDIAG = str(Path(sys.executable).parent / "netdiag")
# what the p2p-wan profile may write on the host; restored byte for byte by the revert
PROFILE_KEYS = [
    "net.ipv4.tcp_congestion_control",
    "net.ipv4.tcp_notsent_lowat",
    "net.core.rmem_max",
    "net.core.wmem_max",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
    "net.ipv4.tcp_mem",
    "net.ipv4.tcp_mtu_probing",
    "net.core.somaxconn",
    "net.ipv4.tcp_slow_start_after_idle",
]


def as_unit(unit: Path, argv: list[str]) -> list[str]:
    """setpriv prefix: the unit's bounding set, no inheritable caps, no_new_privs."""
    caps = ",".join(f"+{c.removeprefix('CAP_').lower()}" for c in capabilities(unit))
    bounding = "-all" + (f",{caps}" if caps else "")
    return ["setpriv", "--no-new-privs", "--inh-caps=-all", f"--bounding-set={bounding}", *argv]


def _raw(key: str) -> bytes:
    return (Path("/proc/sys") / key.replace(".", "/")).read_bytes()


def test_tune_unit_applies_its_profile_with_its_capabilities(tmp_path: Path) -> None:
    unit = SYSTEMD_DIR / "netdiag-tune@.service"
    env = dict(os.environ, NETDIAG_STATE=str(tmp_path / "state"))
    before = {k: _raw(k) for k in PROFILE_KEYS}
    try:
        p = subprocess.run(
            as_unit(unit, [NETDIAG, *exec_argv(unit, "p2p-wan"), "--json"]),
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert p.returncode == 0, p.stderr
        shown = subprocess.run(
            [NETDIAG, "tune", "--show", "--json"], env=env, capture_output=True, text=True
        )
        journal = json.loads(shown.stdout)
        live = [e for e in journal["journal"] if e["status"] == "applied"]
        assert live and any("p2p-wan" in " ".join(e["argv"]) for e in live), journal
    finally:
        r = subprocess.run(
            [NETDIAG, "tune", "--revert"], env=env, capture_output=True, text=True, timeout=120
        )
    assert r.returncode == 0, r.stderr
    assert {k: _raw(k) for k in PROFILE_KEYS} == before


def test_setpriv_really_drops_capabilities() -> None:
    """The harness is not a no-op: under the node unit's empty set /proc shows no capability."""
    unit = SYSTEMD_DIR / "netdiag-node@.service"
    p = subprocess.run(
        as_unit(unit, ["grep", "^CapBnd", "/proc/self/status"]), capture_output=True, text=True
    )
    assert p.returncode == 0, p.stderr
    assert int(p.stdout.split()[1], 16) == 0
