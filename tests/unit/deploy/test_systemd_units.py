"""deploy/systemd: every unit passes `systemd-analyze verify` without a single warning, its
hardening scores within a fixed exposure level, and its ExecStart is a netdiag command line
the CLI accepts."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.deploy.units import INSTALLED_NETDIAG, capabilities, exec_argv, unit_files

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None,
    reason="needs systemd-analyze on PATH (apt-get install systemd): run `make setup`",
)
NETDIAG = str(Path(sys.executable).parent / "netdiag")
# `systemd-analyze security` exposure (0 best .. 10 worst) each unit must stay at or under.
# The exporter loads eBPF as root, so it cannot score like the capability-less node.
EXPOSURE = {
    "netdiag-node@.service": 2.0,
    "netdiag-exporter.service": 6.0,
    "netdiag-tune@.service": 5.5,
}


def _staged(tmp_path: Path) -> list[Path]:
    """Copies of the units whose ExecStart names this checkout's netdiag (verify checks that
    the binary exists and is executable)."""
    out = []
    for u in unit_files():
        dst = tmp_path / u.name
        dst.write_text(u.read_text().replace(INSTALLED_NETDIAG, NETDIAG))
        out.append(dst)
    return out


def _instance(path: Path) -> str:
    """Templates are verified as an instance (`netdiag-node@main.service`)."""
    return path.name.replace("@.", "@main.")


def test_the_three_units_ship() -> None:
    assert {u.name for u in unit_files()} == set(EXPOSURE)


@needs_analyze
def test_units_verify_without_warnings(tmp_path: Path) -> None:
    assert ANALYZE is not None
    for unit in _staged(tmp_path):
        p = subprocess.run(
            [ANALYZE, "verify", f"./{_instance(unit)}"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert p.returncode == 0, f"{unit.name}: {p.stdout}{p.stderr}"
        assert (p.stdout + p.stderr).strip() == "", f"{unit.name} warns:\n{p.stdout}{p.stderr}"


@needs_analyze
def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a misspelt key is reported."""
    assert ANALYZE is not None
    (unit,) = [u for u in _staged(tmp_path) if u.name == "netdiag-exporter.service"]
    unit.write_text(unit.read_text().replace("NoNewPrivileges=", "NoNewPrivilege="))
    p = subprocess.run(
        [ANALYZE, "verify", f"./{unit.name}"], cwd=tmp_path, capture_output=True, text=True
    )
    assert "NoNewPrivilege" in p.stdout + p.stderr


@needs_analyze
def test_units_hardening_exposure(tmp_path: Path) -> None:
    assert ANALYZE is not None
    for unit in _staged(tmp_path):
        limit = EXPOSURE[unit.name]
        p = subprocess.run(
            [
                ANALYZE,
                "security",
                "--offline=yes",
                f"--threshold={limit * 10:.0f}",  # the threshold is in tenths
                f"./{_instance(unit)}",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert p.returncode == 0, f"{unit.name} above exposure {limit}:\n{p.stdout[-1500:]}"


def test_exec_start_is_a_command_line_netdiag_accepts() -> None:
    """`netdiag ARGS --help` exits 0 only when every option in ARGS exists."""
    for unit in unit_files():
        argv = exec_argv(unit)
        p = subprocess.run([NETDIAG, *argv, "--help"], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, f"{unit.name}: netdiag {' '.join(argv)}\n{p.stderr}"


def test_node_runs_without_capabilities_and_the_rest_name_theirs() -> None:
    by_name = {u.name: u for u in unit_files()}
    assert capabilities(by_name["netdiag-node@.service"]) == []
    exporter = set(capabilities(by_name["netdiag-exporter.service"]))
    assert {"CAP_BPF", "CAP_PERFMON"} <= exporter
    assert "CAP_SYS_MODULE" not in exporter and "CAP_SYS_RESOURCE" not in exporter
    assert set(capabilities(by_name["netdiag-tune@.service"])) <= {
        "CAP_NET_ADMIN",
        "CAP_DAC_OVERRIDE",
    }


def test_the_wheel_carries_the_kernel_halves_and_probe_manifests(tmp_path: Path) -> None:
    """An installed netdiag (the image, a systemd host) finds bpf/ and probes/ under
    PREFIX/share/netdiag: the wheel must ship every file of both."""
    import zipfile

    from tests.unit.deploy.units import ROOT

    p = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    (whl,) = tmp_path.glob("netdiag-*.whl")
    names = set(zipfile.ZipFile(whl).namelist())
    for sub in ("bpf", "probes"):
        for f in (ROOT / sub).iterdir():
            assert any(n.endswith(f"/data/share/netdiag/{sub}/{f.name}") for n in names), f
