"""Tracepoint evidence on real kernel TCP: a listener whose accept queue overflows gets a
per-listener overflow count from the kernel's drop reason (counts only, no times)."""

from __future__ import annotations

import socket
import subprocess

from netdiag.diagnose.collect import Selection
from netdiag.diagnose.run import run
from netdiag.kernel import netns

PORT = 5391


def test_accept_queue_overflow_counted_from_drop_reason(scratch_netns: str) -> None:
    subprocess.run(["ip", "-n", scratch_netns, "link", "set", "lo", "up"], check=True)
    socks: list[socket.socket] = []

    def listen() -> socket.socket:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", PORT))
        s.listen(1)  # never accepted: the queue holds backlog + 1 handshakes, the rest drop
        return s

    def dial() -> None:
        for _ in range(8):
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(("127.0.0.1", PORT))
            socks.append(c)

    socks.append(netns.run_in(scratch_netns, listen))
    started = False

    def progress(_share: float) -> None:  # first call: the probes are attached, collect runs
        nonlocal started
        if not started:
            started = True
            netns.run_in(scratch_netns, dial)

    try:
        report = run(
            Selection(ports=(PORT,), netns=scratch_netns), 1.5, progress=progress, use_bpf=True
        )
    finally:
        for s in socks:
            s.close()
    ev = report.events
    assert ev.available and "tcp_drops" in ev.probes, ev.reason
    assert ev.drops.get("TCP_LISTEN_OVERFLOW", 0) > 0, ev.drops
    listener = next(f for f in report.findings if f.scope == "listener")
    assert listener.verdict == "accept-queue-overflow" and listener.severity == "error"
    assert listener.evidence["listener_overflow_drops_pkts"] == ev.drops["TCP_LISTEN_OVERFLOW"]
    assert report.to_json()["events"]["available"] is True


def test_no_bpf_leaves_the_engine_as_it_was(scratch_netns: str) -> None:
    report = run(Selection(netns=scratch_netns), 0.3, use_bpf=False)
    assert report.events.available is False and report.events.reason
    assert report.to_json()["events"]["probes"] == []
