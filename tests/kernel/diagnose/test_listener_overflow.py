"""A real overflowing listener next to a roomy one: the namespace's ListenOverflows go to the
listener that dropped (its own sk_drops in sock_diag's skmem), not to its neighbour."""

from __future__ import annotations

import socket
import subprocess

from netdiag.diagnose.collect import Selection
from netdiag.diagnose.run import run
from netdiag.kernel import netns

FULL_PORT, ROOMY_PORT = 5393, 5394


def test_overflows_are_attributed_to_the_listener_that_dropped(scratch_netns: str) -> None:
    subprocess.run(["ip", "-n", scratch_netns, "link", "set", "lo", "up"], check=True)
    socks: list[socket.socket] = []

    def listen(port: int, backlog: int) -> socket.socket:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen(backlog)  # never accepted
        return s

    def dial() -> None:
        for port, n in ((FULL_PORT, 8), (ROOMY_PORT, 2)):
            for _ in range(n):
                c = socket.socket()
                c.setblocking(False)
                c.connect_ex(("127.0.0.1", port))
                socks.append(c)

    socks.append(netns.run_in(scratch_netns, lambda: listen(FULL_PORT, 1)))
    socks.append(netns.run_in(scratch_netns, lambda: listen(ROOMY_PORT, 64)))
    dialled = False

    def progress(_share: float) -> None:  # after the first sample: drops fall in the window
        nonlocal dialled
        if not dialled:
            dialled = True
            netns.run_in(scratch_netns, dial)

    try:
        report = run(Selection(netns=scratch_netns), 1.0, progress=progress)
    finally:
        for s in socks:
            s.close()
    assert report.host.listen_overflows > 0, report.host
    by_subject = {f.subject: f for f in report.findings}
    full = by_subject[f"listener 127.0.0.1:{FULL_PORT}"]
    assert full.verdict == "accept-queue-overflow" and full.severity == "error", full
    ev = full.evidence
    assert ev["attribution"] == "exact", ev
    drops = ev["listener_drops"]
    assert isinstance(drops, int) and drops > 0
    # the only listener that dropped carries every overflow the namespace counted
    assert ev["overflows_attributed"] == report.host.listen_overflows, ev
    assert f"listener 127.0.0.1:{ROOMY_PORT}" not in by_subject
    assert not [f for f in report.findings if f.subject == "TcpExt.ListenOverflows"]
