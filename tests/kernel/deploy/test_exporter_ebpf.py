"""The exporter on real eBPF, started exactly as its systemd unit would (the unit's capability
bounding set, no_new_privs): series per peer, capped; SIGTERM detaches every program."""

from __future__ import annotations

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
from tests.unit.deploy.units import SYSTEMD_DIR

pytestmark = pytest.mark.skipif(
    missing_bcc() is not None or shutil.which("bpftool") is None,
    reason=missing_bcc() or "needs bpftool on PATH: run `make setup`",
)


def _tracepoint_progs() -> int:
    out = subprocess.run(
        ["bpftool", "prog", "show"], capture_output=True, text=True, check=True
    ).stdout
    return sum(1 for line in out.splitlines() if " tracepoint " in line)


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
    before = _tracepoint_progs()
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
        assert _tracepoint_progs() > before
        m = ex.metrics()
        peers = {labels["peer"] for labels, _v in m["netdiag_tcp_connections"]}
        assert len(peers) == 4 and "other" in peers  # 3 admitted of 6 label sets, + other
        deadline = time.monotonic() + 30
        while (v := ex.json("/verdicts"))["runs"] < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert v["runs"] >= 1 and v["errors"] == 0, v
        assert v["report"]["connections"] == 10  # five connections, both ends
        ex.signal(signal.SIGTERM)
        assert ex.wait(30) == 0
    finally:
        ex.kill()
    assert _tracepoint_progs() == before
    assert "Traceback" not in "".join(ex.stderr)
