"""Resource limits in the mould of go-libp2p's resource manager, scaled to the machine.

- **Connections** count from ``accept()``: a socket still in its TLS or node handshake holds
  an inbound slot, a per-IP slot and a handshake slot (see peering.Peering.admit_inbound).
- **Connection rate per IP**: a token bucket per address (go-libp2p: 0.2/s, burst 16 per /32;
  here 1/s, burst 16 — a lab puts several honest peers behind one address).
- **Memory**: every connection reports what it holds (bytes buffered toward a frame, frames
  queued for the peer); a connection over its own budget or one that would take the node over
  its budget is closed. Defaults: the node 1/8 of physical memory (go-libp2p's autoscaling
  share) clamped to [128 MiB, 1 GiB]; a connection two frames plus the write-buffer cap.
- **File descriptors**: at start the soft RLIMIT_NOFILE is raised toward the hard one if
  needed; if the connection limits plus a reserve still do not fit, the inbound limit is cut to
  what fits (and said so), or the node refuses to start.
"""

from __future__ import annotations

import ctypes
import functools
import os
import resource
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from netdiag.node.config import NodeConfig
from netdiag.node.errors import ConfigError
from netdiag.node.limits import TokenBucket

MiB = 1 << 20
FD_RESERVE = 64  # SQLite (WAL: 3), API listener and its clients, logs, TLS files, dials
MIN_INBOUND = 8
MAX_TRACKED_IPS = 4096


def physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 1 << 30


@dataclass(frozen=True)
class Limits:
    max_inbound: int
    max_outbound: int
    max_inbound_per_ip: int
    max_pending_handshakes: int
    conn_rate_per_ip: float
    conn_burst_per_ip: int
    conn_memory_bytes: int
    node_memory_bytes: int
    fd_limit: int

    def as_gauges(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.__dict__.items()}


def resolve_limits(cfg: NodeConfig, phys_mem: int | None = None) -> Limits:
    """The effective limits: config values, with 0 meaning "scaled to this machine"."""
    mem = physical_memory() if phys_mem is None else phys_mem
    node_mem = cfg.node_memory_bytes or max(128 * MiB, min(1024 * MiB, mem // 8))
    conn_mem = cfg.conn_memory_bytes or 2 * cfg.max_frame_bytes + cfg.max_write_buffer_bytes
    inbound, fd_limit = fit_fds(cfg.max_inbound, cfg.max_outbound)
    return Limits(
        max_inbound=inbound,
        max_outbound=cfg.max_outbound,
        max_inbound_per_ip=cfg.max_inbound_per_ip,
        max_pending_handshakes=cfg.max_pending_handshakes,
        conn_rate_per_ip=cfg.conn_rate_per_ip,
        conn_burst_per_ip=cfg.conn_burst_per_ip,
        conn_memory_bytes=min(conn_mem, node_mem),
        node_memory_bytes=node_mem,
        fd_limit=fd_limit,
    )


def fit_fds(max_inbound: int, max_outbound: int) -> tuple[int, int]:
    """(inbound limit that fits, soft fd limit). Raises the soft limit toward the hard one."""
    need = max_inbound + max_outbound + FD_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return max_inbound, 1 << 20
    fits = soft - max_outbound - FD_RESERVE
    if fits < MIN_INBOUND:
        raise ConfigError(
            f"RLIMIT_NOFILE {soft} leaves {fits} file descriptors for inbound connections "
            f"(max_outbound {max_outbound} + {FD_RESERVE} reserved): raise it with "
            f"`ulimit -n {need}` or lower max_outbound"
        )
    return min(max_inbound, fits), soft


class ConnRateLimiter:
    """New connections per IP: one token bucket per address, the least recent forgotten."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self.buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def allow(self, ip: str) -> bool:
        if self.rate <= 0:
            return True
        b = self.buckets.get(ip)
        if b is None:
            b = self.buckets[ip] = TokenBucket(self.rate, float(self.burst), self.clock)
            if len(self.buckets) > MAX_TRACKED_IPS:
                self.buckets.popitem(last=False)
        self.buckets.move_to_end(ip)
        return b.take()


class MemoryBudget:
    """Bytes each connection holds, against its own budget and the node's."""

    def __init__(self, per_conn: int, total: int) -> None:
        self.per_conn = per_conn
        self.total = total
        self.held: dict[object, int] = {}
        self.used = 0
        self.peak = 0

    def update(self, owner: object, nbytes: int) -> str | None:
        """Record that ``owner`` now holds ``nbytes``; the reason to refuse it, if any."""
        before = self.held.get(owner, 0)
        if nbytes > self.per_conn:
            return f"connection holds {nbytes} bytes, over its budget of {self.per_conn}"
        if nbytes > before and self.used - before + nbytes > self.total:
            return f"node memory budget {self.total} bytes reached ({self.used} in use)"
        self.held[owner] = nbytes
        self.used += nbytes - before
        self.peak = max(self.peak, self.used)
        return None

    def release(self, owner: object) -> None:
        self.used -= self.held.pop(owner, 0)


@functools.cache
def _libc() -> ctypes.CDLL:
    """The process's C library, loaded once (the trim check asks it every few seconds)."""
    return ctypes.CDLL(None)


def malloc_trim() -> bool:
    """Give the C heap's free memory back to the OS (glibc ``malloc_trim(0)``); False where
    there is no such call (another libc). ctypes drops the GIL for the call."""
    try:
        return bool(_libc().malloc_trim(0))
    except (OSError, AttributeError):
        return False


def malloc_free_bytes() -> int | None:
    """Bytes glibc's heaps hold free (``mallinfo2().fordblks``, every arena); None elsewhere."""
    try:
        fn = _libc().mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = _MallInfo2
    return int(fn().fordblks)


class _MallInfo2(ctypes.Structure):  # glibc >= 2.33 <malloc.h>: ten size_t fields
    _fields_ = [
        (n, ctypes.c_size_t)
        for n in (
            *("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks"),
            *("uordblks", "fordblks", "keepcost"),
        )
    ]


class HeapTrimmer:
    """Trim the C heap after a burst: glibc keeps what a burst freed (measured: a defences-off
    TLS churn left RSS x1.29, x1.17 after one trim by hand; a 30 s flood of valid transactions
    through the API left 17 MB free in the heaps, 5-10 MB of it given back by one trim).
    ``due()`` is asked every few seconds: yes every ``after_conns`` new connections while a
    connection burst goes on and once more when it has ended; and whatever the cause, yes when
    the heaps hold ``after_free`` bytes more free than they did after the last trim (what a
    trim could not give back - fragments between live blocks - does not trigger it again).
    The daemon trims off the loop."""

    def __init__(
        self,
        after_conns: int = 256,
        after_free: int = 4 * MiB,
        free_bytes: Callable[[], int | None] = malloc_free_bytes,
    ) -> None:
        self.after_conns = after_conns
        self.after_free = after_free
        self.free_bytes = free_bytes
        self._free_floor: int | None = None  # free bytes measured after the last trim
        self.accepted = 0  # counted by the daemon at accept()
        self._at_trim = 0
        self._at_check = 0
        self._in_burst = False  # trimmed during a burst that has not ended yet
        self.trims = 0

    def due(self) -> bool:
        new = self.accepted - self._at_trim
        quiet = self.accepted == self._at_check  # none since the last check: burst over
        self._at_check = self.accepted
        free = self.free_bytes()
        if free is not None:  # the floor follows the heaps down as freed memory is reused
            self._free_floor = free if self._free_floor is None else min(self._free_floor, free)
        if new >= self.after_conns:
            self._in_burst = True
        elif quiet and self._in_burst:  # the burst's tail
            self._in_burst = False
        elif free is None or free - (self._free_floor or 0) < self.after_free:
            return False
        self._at_trim = self.accepted
        self.trims += 1
        return True

    def trimmed(self, free_after: int | None) -> None:
        """After a trim: what it left free is the floor the next one must be above."""
        if free_after is not None:
            self._free_floor = free_after


def trim_heap() -> int | None:
    """``malloc_trim`` (off the loop: ctypes drops the GIL), then the bytes left free."""
    malloc_trim()
    return malloc_free_bytes()
