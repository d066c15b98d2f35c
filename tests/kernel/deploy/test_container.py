"""The container image (deploy/Containerfile via deploy/build-image.sh): `netdiag doctor` and a
short `trace-peers` run inside it with the documented flags and see the host's kernel.

The image is built once per content (a hash of the Containerfile, the build script,
pyproject.toml and netdiag/) and kept in podman's store as localhost/netdiag:test-HASH; a
cold build takes a few minutes (debootstrap + apt + wheels), a warm one nothing. Root here
lacks CAP_SYS_RESOURCE, so the run flags set RLIMIT_NOFILE / RLIMIT_NPROC at or below the
host's hard limits (podman's defaults are higher and runc then fails to set them).
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
TOOLS = ("podman", "debootstrap", "runc")
pytestmark = pytest.mark.skipif(
    any(shutil.which(t) is None for t in TOOLS),
    reason="needs podman, debootstrap and runc (apt-get install podman debootstrap runc): "
    "run `make setup`",
)


def content_hash() -> str:
    h = hashlib.sha256()
    files = [ROOT / "deploy/Containerfile", ROOT / "deploy/build-image.sh", ROOT / "pyproject.toml"]
    files += sorted(
        p for p in (ROOT / "netdiag").rglob("*") if p.is_file() and "__pycache__" not in p.parts
    )
    files += sorted((ROOT / "bpf").glob("*")) + sorted((ROOT / "probes").glob("*"))
    for f in files:
        h.update(str(f.relative_to(ROOT)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def limits() -> tuple[int, int]:
    """NOFILE and NPROC for the container: the documented 20000 / 32768, or this host's hard
    limit when that is lower."""
    out = []
    for res, want in ((resource.RLIMIT_NOFILE, 20000), (resource.RLIMIT_NPROC, 32768)):
        hard = resource.getrlimit(res)[1]
        out.append(want if hard == resource.RLIM_INFINITY else min(want, hard))
    return out[0], out[1]


def run_flags() -> list[str]:
    """The documented flags, with limits at or below this host's hard limits."""
    nofile, nproc = limits()
    return [
        "--runtime", "runc", "--privileged", "--network", "host", "--pid", "host",
        "--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", f"nproc={nproc}:{nproc}",
        "-v", "/sys/kernel/tracing:/sys/kernel/tracing",
        "-v", "/sys/fs/bpf:/sys/fs/bpf",
        "-v", "/sys/fs/cgroup:/sys/fs/cgroup:ro",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def image() -> str:
    tag = f"localhost/netdiag:test-{content_hash()}"
    have = subprocess.run(["podman", "image", "exists", tag], capture_output=True)
    if have.returncode != 0:
        env = dict(os.environ, TAG=tag, PYTHON=str(ROOT / ".venv/bin/python"))
        p = subprocess.run(
            [str(ROOT / "deploy/build-image.sh")],
            env=env,
            capture_output=True,
            text=True,
            timeout=1500,
        )
        if p.returncode != 0 and "debootstrap failed" in p.stderr:
            pytest.skip(f"cannot build the base image: {p.stderr.strip().splitlines()[-1]}")
        assert p.returncode == 0, p.stderr[-3000:]
        # one test image at a time: drop the ones of older content
        listed = subprocess.run(
            ["podman", "images", "--format", "{{.Repository}}:{{.Tag}}"],
            capture_output=True,
            text=True,
        ).stdout.split()
        old = [t for t in listed if t.startswith("localhost/netdiag:test-") and t != tag]
        if old:
            subprocess.run(["podman", "rmi", *old], capture_output=True)
    return tag


def podman_run(image: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", "run", "--rm", *run_flags(), image, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_default_rlimits_fail_without_cap_sys_resource_and_ours_work(image: str) -> None:
    """Why the flags carry --ulimit: podman's default NOFILE is above this host's hard limit,
    and raising a hard limit needs CAP_SYS_RESOURCE (root here lacks it)."""
    p = subprocess.run(
        # host network: podman's default bridge network would leave cni-podman0 in the root ns
        [
            "podman",
            "run",
            "--rm",
            "--runtime",
            "runc",
            "--network",
            "host",
            "--entrypoint",
            "true",
            image,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if p.returncode != 0:
        assert "rlimit" in p.stderr, p.stderr
    q = subprocess.run(
        ["podman", "run", "--rm", *run_flags(), "--entrypoint", "sh", image, "-c", "ulimit -n"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert q.returncode == 0, q.stderr
    assert int(q.stdout.strip()) == limits()[0]


def test_doctor_in_the_container(image: str) -> None:
    p = podman_run(image, "doctor", "--json")
    assert p.returncode == 0, p.stderr[-2000:]
    doc = json.loads(p.stdout)
    assert doc["core_ok"] is True
    checks = {c["name"]: c["status"] for c in doc["checks"]}
    assert checks["bcc compile+attach"] == "ok" and checks["tracefs"] == "ok"
    assert doc["kernel"] == os.uname().release  # the host's kernel, seen from inside


@pytest.fixture
def busy_port() -> Iterator[int]:
    lst = socket.create_server(("127.0.0.1", 0))
    port = int(lst.getsockname()[1])
    cli = socket.create_connection(("127.0.0.1", port))
    srv, _ = lst.accept()
    yield port
    for s in (cli, srv, lst):
        s.close()


def test_trace_peers_in_the_container_sees_a_host_connection(image: str, busy_port: int) -> None:
    p = podman_run(
        image,
        "trace-peers",
        "--json",
        "--count",
        "2",
        "--interval",
        "0.5",
        "--port",
        str(busy_port),
    )
    assert p.returncode == 0, p.stderr[-2000:]
    lines = [json.loads(ln) for ln in p.stdout.splitlines() if ln.strip()]
    assert len(lines) == 2
    assert lines[-1]["source"] == "ebpf"
    ports = {(r.get("lport"), r.get("rport")) for r in lines[-1]["rows"]}
    assert any(busy_port in pair for pair in ports), lines[-1]["rows"]
