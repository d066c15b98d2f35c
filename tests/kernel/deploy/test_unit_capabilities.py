"""The capability bounding sets in deploy/systemd are enough: each command runs here under
`setpriv` with exactly its unit's set (and no_new_privs), as systemd would start it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

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


@pytest.fixture
def world_dir() -> Iterator[Path]:
    """A directory an unprivileged user can reach (pytest's tmp dirs are root-only)."""
    d = Path(tempfile.mkdtemp(prefix="nd-unit-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_node_unit_runs_a_node_without_capabilities_as_an_unprivileged_user(
    world_dir: Path,
) -> None:
    """netdiag-node@.service's command line, its empty bounding set, no_new_privs and a
    non-root user (the unit's DynamicUser): the node starts and serves /status."""
    import socket
    import time
    import urllib.request

    unit = SYSTEMD_DIR / "netdiag-node@.service"
    tmp_path = world_dir
    gen = tmp_path / "gen"
    p = subprocess.run(
        [NETDIAG, "node", "genesis", "--validators", "1", "--lab-seed", "unit", "--out", str(gen)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    for f in gen.iterdir():
        f.chmod(0o644)
    gen.chmod(0o755)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        api_port = s.getsockname()[1]
    conf = tmp_path / "main.toml"
    conf.write_text(
        f'genesis = "{gen / "genesis.json"}"\nlisten = "127.0.0.1:0"\n'
        f'api = "127.0.0.1:{api_port}"\n'  # no key: an observer with a key of its own
    )
    conf.chmod(0o644)
    data = tmp_path / "data"
    data.mkdir(mode=0o777)
    data.chmod(0o777)
    argv = [
        a.replace("/etc/netdiag/node/main.toml", str(conf)).replace(
            "/var/lib/netdiag-node/main", str(data / "main")
        )
        for a in exec_argv(unit, "main")
    ]
    user = ["--reuid=65534", "--regid=65534", "--clear-groups"]
    proc = subprocess.Popen(
        [*as_unit(unit, [])[:1], *user, *as_unit(unit, [])[1:], NETDIAG, *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, HOME=str(tmp_path)),
    )
    try:
        deadline = time.monotonic() + 60
        status = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/status", timeout=2) as r:
                    status = json.loads(r.read())
                    break
            except OSError:
                time.sleep(0.2)
        assert status is not None, proc.stderr.read() if proc.stderr else ""
        assert isinstance(status["height"], int) and status["genesis_hash"], status
        cap = Path(f"/proc/{proc.pid}/status").read_text()
        fields = dict(line.split(":\t", 1) for line in cap.splitlines() if ":\t" in line)
        assert int(fields["CapBnd"], 16) == 0 and int(fields["CapEff"], 16) == 0
        assert fields["Uid"].split()[0] == "65534" and fields["NoNewPrivs"].strip() == "1"
    finally:
        proc.terminate()
        rc = proc.wait(30)
    assert rc == 0
