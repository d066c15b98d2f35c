"""The exporter on real eBPF, started exactly as its systemd unit would (the unit's capability
bounding set, no_new_privs): series per peer, capped; SIGTERM detaches every program."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from netdiag.bench.exporter_process import ExporterProcess
from tests.conftest import missing_bcc
from tests.kernel.deploy.test_unit_capabilities import as_unit
from tests.kernel.trace.conftest import progs_of
from tests.unit.deploy.units import SYSTEMD_DIR

pytestmark = pytest.mark.skipif(
    missing_bcc() is not None or shutil.which("bpftool") is None,
    reason=missing_bcc() or "needs bpftool on PATH: run `make setup`",
)


def _tracepoint_progs() -> set[int]:
    """Ids of the tracepoint programs loaded on this host (anyone's)."""
    out = subprocess.run(
        ["bpftool", "prog", "show", "-j"], capture_output=True, text=True, check=True
    ).stdout
    return {int(p["id"]) for p in json.loads(out or "[]") if p.get("type") == "tracepoint"}


@pytest.fixture
def five_peers() -> Iterator[int]:
    lst = socket.create_server(("127.0.0.1", 0))
    port = int(lst.getsockname()[1])
    socks = []
    for i in range(5):
        c = socket.create_connection(("127.0.0.1", port), source_address=(f"127.0.0.{10 + i}", 0))
        s, _ = lst.accept()
        socks += [c, s]
    yield port
    for s in [*socks, lst]:
        s.close()


def test_exporter_under_its_unit_capabilities(five_peers: int) -> None:
    unit = SYSTEMD_DIR / "netdiag-exporter.service"
    # the unit's command line would read /etc/netdiag/exporter.toml: the same flags instead
    ex = ExporterProcess(
        [
            "--listen",
            "127.0.0.1:0",
            "--interval",
            "0.3",
            "--port",
            str(five_peers),
            "--max-series",
            "3",
            "--verdict-window",
            "0.5",
            "--verdict-interval",
            "1",
        ],
        prefix=as_unit(unit, []),
    )
    try:
        doc = ex.wait_until(lambda d: d["frames"] >= 2, 60, "two frames")
        assert doc["source"] == "ebpf", "".join(ex.stderr)
        # the exporter's own programs, by id: other processes on this host load and unload
        # tracepoint programs at any time, so a host-wide count before and after proves nothing
        held = set(progs_of(ex.pid))
        assert held & _tracepoint_progs(), f"the exporter holds no tracepoint program: {held}"
        m = ex.metrics()
        peers = {labels["peer"] for labels, _v in m["netdiag_tcp_connections"]}
        assert len(peers) == 4 and "other" in peers  # 3 admitted of 6 label sets, + other
        deadline = time.monotonic() + 30
        while (v := ex.json("/verdicts"))["runs"] < 1 and time.monotonic() < deadline:
            held |= set(progs_of(ex.pid))  # the verdict run's event probes come and go
            time.sleep(0.2)
        held |= set(progs_of(ex.pid))
        assert v["runs"] >= 1 and v["errors"] == 0, v
        assert v["report"]["connections"] == 10  # five connections, both ends
        ex.signal(signal.SIGTERM)
        assert ex.wait(30) == 0
    finally:
        ex.kill()
    deadline = time.monotonic() + 10  # a program goes once the kernel drops its last reference
    while (left := held & _tracepoint_progs()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"programs {left} outlived the exporter's SIGTERM"
    assert "Traceback" not in "".join(ex.stderr)
