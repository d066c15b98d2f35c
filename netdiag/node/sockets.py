"""What the kernel says about a peer's TCP socket: its cookie, queued and unsent bytes, segment
counts and the bytes the peer has acknowledged. Each helper answers "unknown" (0, None) when
the socket is not TCP (a test's socketpair or fake) or the kernel does not report the field.
Also the two ways to bound what the kernel keeps for a peer: TCP_USER_TIMEOUT, and a reset."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import socket
import struct

SO_COOKIE = 57  # <linux/socket.h>; Python's socket module does not name it
SIOCOUTQ = 0x5411  # <asm-generic/ioctls.h> TIOCOUTQ: bytes in the send queue, unacked + unsent
SIOCOUTQNSD = 0x894B  # <linux/sockios.h>: bytes in the send queue not yet sent
# struct tcp_info (<linux/tcp.h>): the fields read here and their offsets
TCP_INFO_BYTES_ACKED = struct.Struct("=Q")  # tcpi_bytes_acked (Linux >= 4.1, RFC 4898)
TCP_INFO_BYTES_ACKED_AT = 120
TCP_INFO_SEGS = struct.Struct("=II")  # tcpi_segs_out, tcpi_segs_in (Linux >= 4.2)
TCP_INFO_SEGS_AT = 136


def socket_cookie(sock: socket.socket | None) -> int | None:
    """The kernel's socket cookie, the key tcp:tcp_probe and sock_diag report for this socket."""
    if sock is None:
        return None
    try:
        return int.from_bytes(sock.getsockopt(socket.SOL_SOCKET, SO_COOKIE, 8), "little")
    except OSError:
        return None


def _ioctl_int(sock: socket.socket | None, request: int) -> int:
    if sock is None:
        return 0
    try:
        raw = fcntl.ioctl(sock.fileno(), request, b"\0\0\0\0")
    except (OSError, ValueError):  # ValueError: fileno -1, the socket is closed
        return 0
    return int(struct.unpack("=i", raw)[0])


def unsent_bytes(sock: socket.socket | None) -> int:
    """Bytes in the socket's send queue that TCP has not sent yet (0 when unknown)."""
    return _ioctl_int(sock, SIOCOUTQNSD)


def queued_bytes(sock: socket.socket | None) -> int:
    """Bytes of our output the kernel still holds for the socket: sent but not acknowledged,
    plus not sent yet (SIOCOUTQ; 0 when unknown). On a TCP socket the peer has not received
    these; they occupy the send buffer (kernel memory) until it does."""
    return _ioctl_int(sock, SIOCOUTQ)


def bound_unacknowledged(sock: socket.socket | None, seconds: float) -> None:
    """Let the kernel abort the connection once our output has waited ``seconds`` without the
    peer acknowledging it or opening its window (TCP_USER_TIMEOUT; a no-op on a socket that is
    not TCP). Set before a graceful close: once the fd is closed, the kernel keeps the socket as
    an orphan (FIN-WAIT-1) for as long as it still has output queued, and a peer that never
    reads but answers zero-window probes keeps it for ever (measured: 2 MB still held 300 s
    after the close), outside every limit of the node."""
    if sock is None or seconds <= 0:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, max(1, int(seconds * 1000)))


def _tcp_info(sock: socket.socket | None, need: int) -> bytes | None:
    """The first ``need`` bytes of the socket's struct tcp_info, None when it has fewer."""
    if sock is None:
        return None
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, need)
    except OSError:
        return None
    return raw if len(raw) >= need else None


def tcp_segments(sock: socket.socket | None) -> tuple[int, int]:
    """(segments sent, segments received) of the socket so far, from TCP_INFO; (0, 0) when
    the kernel does not report them."""
    raw = _tcp_info(sock, TCP_INFO_SEGS_AT + TCP_INFO_SEGS.size)
    if raw is None:
        return 0, 0
    out, inn = TCP_INFO_SEGS.unpack_from(raw, TCP_INFO_SEGS_AT)
    return int(out), int(inn)


def tcp_bytes_acked(sock: socket.socket | None) -> int | None:
    """Bytes of our output the peer has acknowledged so far, i.e. received (tcpi_bytes_acked:
    one getsockopt); None when the socket does not report it."""
    raw = _tcp_info(sock, TCP_INFO_BYTES_ACKED_AT + TCP_INFO_BYTES_ACKED.size)
    if raw is None:
        return None
    return int(TCP_INFO_BYTES_ACKED.unpack_from(raw, TCP_INFO_BYTES_ACKED_AT)[0])


def reset(writer: asyncio.StreamWriter) -> None:
    """Abort the connection with a TCP reset: SO_LINGER 0 makes the kernel drop its send queue
    too. A plain abort only closes the fd, and with output queued to a zero window the kernel
    keeps the socket as an orphan in FIN-WAIT-1, holding up to a send buffer (4 MB measured),
    until its orphan retries run out, while the peer sees no reset."""
    _reset(writer.get_extra_info("socket"), writer.transport)


def reset_transport(transport: asyncio.WriteTransport) -> None:
    """``reset`` for a bare transport (the REST API's, apiguard.py)."""
    _reset(transport.get_extra_info("socket"), transport)


def _reset(sock: socket.socket | None, transport: asyncio.WriteTransport) -> None:
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed, or not a socket that lingers
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
