"""Live trials for doctor: do the real thing once, in a corner, and undo it.

Each trial returns (ok, detail) and cleans up whatever it created, success or not.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import socket
import struct
import threading
import time
from collections.abc import Iterator

from netdiag.errors import NetdiagError
from netdiag.kernel import bcc_loader, cgroup, netns

Result = tuple[bool, str]


@contextlib.contextmanager
def loopback_flow(nbytes: int = 256 * 1024) -> Iterator[tuple[int, int]]:
    """A real loopback TCP connection that moves `nbytes`; yields (client port, server port)."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    sport = srv.getsockname()[1]

    def sink() -> None:
        conn, _ = srv.accept()
        with conn:
            while conn.recv(65536):
                pass

    t = threading.Thread(target=sink, daemon=True)
    t.start()
    cli = socket.create_connection(("127.0.0.1", sport))
    try:
        cport = cli.getsockname()[1]
        cli.sendall(b"x" * nbytes)
        yield cport, sport
    finally:
        cli.close()
        t.join(timeout=2)
        srv.close()


def bcc_tracepoint() -> Result:
    """Compile bpf/selftest.bpf.c, attach it to tcp:tcp_probe and see it count real events."""
    t0 = time.monotonic()
    try:
        b = bcc_loader.load(bcc_loader.bpf_source("selftest"))
    except NetdiagError as e:
        return False, str(e)
    try:
        compiled = time.monotonic() - t0
        with loopback_flow():
            time.sleep(0.05)
        hits = b["hits"][0].value
        if hits == 0:
            return False, "program attached to tcp:tcp_probe but saw no events from a loopback flow"
        return True, f"compiled+loaded in {compiled:.2f} s; tcp:tcp_probe counted {hits} events"
    finally:
        b.cleanup()


def sockops_attach() -> Result:
    """Load a sockops program and attach it to a scratch child cgroup, then detach and remove."""
    try:
        root = cgroup.v2_root()
    except NetdiagError as e:
        return False, str(e)
    try:
        b = bcc_loader.load(bcc_loader.bpf_source("selftest_sockops"))
    except NetdiagError as e:
        return False, str(e)
    bcc = bcc_loader.import_bcc()
    cg = root / f"nd-doctor-{secrets.token_hex(3)}"
    try:
        fn = b.load_func(b"selftest_sockops", bcc.BPF.SOCK_OPS)
        cg.mkdir()
        fd = os.open(cg, os.O_RDONLY)
        try:
            bcc.BPF.attach_func(fn, fd, bcc.BPFAttachType.CGROUP_SOCK_OPS)
            bcc.BPF.detach_func(fn, fd, bcc.BPFAttachType.CGROUP_SOCK_OPS)
        finally:
            os.close(fd)
        return True, f"attached and detached a sockops program on a scratch cgroup under {root}"
    except Exception as e:
        return False, f"sockops attach on {root} failed: {e}"
    finally:
        with contextlib.suppress(OSError):
            cg.rmdir()
        b.cleanup()


TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000


def tun_device() -> Result:
    """Create a TUN interface inside a scratch namespace (it vanishes with the fd and the ns)."""

    def body() -> Result:
        try:
            fd = os.open("/dev/net/tun", os.O_RDWR)
        except OSError as e:
            return False, f"/dev/net/tun: {e.strerror}"
        try:
            ifr = struct.pack("16sH", b"ndtunprobe", IFF_TUN | IFF_NO_PI)
            fcntl.ioctl(fd, TUNSETIFF, ifr)
            return True, "created a TUN interface in a scratch namespace"
        except OSError as e:
            return False, f"TUNSETIFF: {e.strerror}"
        finally:
            os.close(fd)

    try:
        with netns.scratch("tun") as ns:
            return netns.run_in(ns, body)
    except NetdiagError as e:
        return False, str(e)


def sock_diag() -> Result:
    """Dump TCP sockets with tcp_info through inet_diag (what `bdp` and the fallback use)."""
    from pyroute2 import DiagSocket

    # Established sockets only: a busy host's TIME_WAIT sockets make the dump long, and a dump
    # that races socket churn may skip entries, so one miss is retried before it counts.
    established = 1 << 1
    with loopback_flow() as (cport, _sport):
        for _attempt in range(3):
            with DiagSocket() as ds:
                ds.bind()
                socks = ds.get_sock_stats(
                    family=socket.AF_INET, states=established, extensions=0xFF
                )
            for s in socks:
                if s.get("idiag_sport") == cport:
                    info = s.get_attr("INET_DIAG_INFO")
                    if info is None:
                        return False, "inet_diag returned the socket but no tcp_info"
                    return True, (
                        f"inet_diag dump works ({len(socks)} established IPv4 sockets, "
                        "tcp_info present)"
                    )
    return False, "inet_diag dump did not show a live loopback connection (3 tries)"
