"""The raw bpf(2) and perf_event_open(2) calls the light loader needs, through ctypes.

No bcc, no libbpf: a long-running tracer creates maps, loads programs compiled earlier (see
bpf_object.py), attaches them to tracepoints and reads its maps with these calls alone, so
neither LLVM nor libbcc is ever mapped into it. Every object is an fd of this process: it goes
away with the process, even after kill -9.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import functools
import os
import platform
import struct

from netdiag.errors import KernelFeatureError, NetdiagError, PrivilegeError
from netdiag.kernel import caps

_NR_BPF = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "armv7l": 386, "ppc64le": 361}
_NR_PERF_EVENT_OPEN = {"x86_64": 298, "aarch64": 241, "riscv64": 241, "armv7l": 364}

BPF_MAP_CREATE = 0
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_DELETE_ELEM = 3
BPF_MAP_GET_NEXT_KEY = 4
BPF_PROG_LOAD = 5
BPF_RAW_TRACEPOINT_OPEN = 17
BPF_MAP_LOOKUP_BATCH = 24

BPF_PROG_TYPE_TRACEPOINT = 5
BPF_PROG_TYPE_TRACING = 26
BPF_TRACE_RAW_TP = 23  # enum bpf_attach_type: tp_btf (a BTF-enabled raw tracepoint)
BPF_MAP_TYPE_PERCPU_HASH = 5
BPF_MAP_TYPE_PERCPU_ARRAY = 6
BPF_MAP_TYPE_LRU_PERCPU_HASH = 10
PERCPU_TYPES = {BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_LRU_PERCPU_HASH}

ATTR_SIZE = 128  # larger than every union bpf_attr member used here; the tail stays zero

PERF_TYPE_TRACEPOINT = 2
PERF_SAMPLE_RAW = 1 << 10
PERF_FLAG_FD_CLOEXEC = 1 << 3
PERF_EVENT_IOC_ENABLE = 0x2400
PERF_EVENT_IOC_SET_BPF = 0x40042408
_PERF_ATTR_SIZE = 112  # PERF_ATTR_SIZE_VER5


class BpfErrno(NetdiagError):
    """A bpf() call failed with errno (kept for callers that expect some, e.g. ENOENT)."""

    def __init__(self, what: str, err: int) -> None:
        super().__init__(f"{what}: {os.strerror(err)}")
        self.errno = err


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def _nr(table: dict[str, int], name: str) -> int:
    nr = table.get(platform.machine())
    if nr is None:
        raise KernelFeatureError(
            f"{name}() syscall number unknown on {platform.machine()}",
            "add it to netdiag/kernel/bpf_sys.py",
        )
    return nr


def raw(cmd: int, attr: ctypes.Array[ctypes.c_char]) -> tuple[int, int]:
    """bpf(cmd, attr): (return value, errno) — no exception, for callers that expect errors."""
    rv = _libc().syscall(_nr(_NR_BPF, "bpf"), cmd, attr, ctypes.sizeof(attr))
    return int(rv), (ctypes.get_errno() if rv < 0 else 0)


def attr_buf(data: bytes) -> ctypes.Array[ctypes.c_char]:
    return ctypes.create_string_buffer(data.ljust(ATTR_SIZE, b"\0"), ATTR_SIZE)


def call(cmd: int, attr: bytes | ctypes.Array[ctypes.c_char], what: str) -> int:
    """bpf(cmd, attr) with errors as netdiag errors (privileges and kernel features named)."""
    buf = attr_buf(attr) if isinstance(attr, bytes) else attr
    rv, err = raw(cmd, buf)
    if rv >= 0:
        return rv
    msg = f"{what}: {os.strerror(err)}"
    if err in (errno.EPERM, errno.EACCES):
        raise PrivilegeError(msg, "run as root (CAP_BPF + CAP_PERFMON + CAP_NET_ADMIN)")
    if err in (errno.EOPNOTSUPP, errno.ENOSYS):
        raise KernelFeatureError(msg, "this kernel lacks this BPF feature")
    raise BpfErrno(what, err)


def _addr(buf: ctypes.Array[ctypes.c_char] | None) -> int:
    return ctypes.addressof(buf) if buf is not None else 0


def map_create(
    map_type: int, key_size: int, value_size: int, max_entries: int, flags: int, name: str
) -> int:
    attr = struct.pack(
        "IIIIIII16s",
        map_type,
        key_size,
        value_size,
        max_entries,
        flags,
        0,
        0,
        name.encode()[:15],
    )
    return call(BPF_MAP_CREATE, attr, f"creating BPF map {name}")


def prog_load(
    prog_type: int,
    insns: bytes,
    license: str,
    kern_version: int,
    name: str,
    expected_attach_type: int = 0,
    attach_btf_id: int = 0,
) -> int:
    """BPF_PROG_LOAD; on a verifier refusal the error carries the verifier's log tail.
    `attach_btf_id` (a vmlinux BTF type id) with `expected_attach_type` for tracing programs."""
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license.encode())
    cname = name.encode()[:15]

    def attempt(log: ctypes.Array[ctypes.c_char] | None) -> tuple[int, int]:
        attr = struct.pack(
            "IIQQIIQII16sIIIIQIIQII",
            prog_type,
            len(insns) // 8,
            _addr(code),
            _addr(lic),
            1 if log is not None else 0,
            ctypes.sizeof(log) if log is not None else 0,
            _addr(log),
            kern_version,
            0,
            cname,
            0,  # prog_ifindex
            expected_attach_type,
            0,  # prog_btf_fd
            0,
            0,  # func_info
            0,
            0,
            0,  # line_info
            0,
            attach_btf_id,  # offset 108; attach_btf_obj_fd (112) 0 = vmlinux
        )
        return raw(BPF_PROG_LOAD, attr_buf(attr))

    fd, err = attempt(None)
    if fd >= 0:
        return fd
    what = f"loading BPF program {name}: {os.strerror(err)}"
    if err == errno.EPERM and not caps.has("CAP_BPF"):  # CAP_SYS_ADMIN counts (caps.has)
        raise PrivilegeError(what, "run as root (CAP_BPF + CAP_PERFMON)")
    # the verifier refuses most bad memory accesses with EACCES (EPERM for some): only its log
    # tells a refusal from a missing privilege, so ask again with one
    first, truncated = err, False
    for size in LOG_SIZES:
        log = ctypes.create_string_buffer(size)
        fd, err = attempt(log)
        if fd >= 0:  # the first refusal was transient (e.g. EAGAIN)
            return fd
        # before 6.4 a log that did not fit fails the load with ENOSPC: its tail is then the
        # middle of the log, not the reason; ask once more with a larger buffer
        truncated = err == errno.ENOSPC
        if not truncated:
            break
    if truncated:
        err = first  # the refusal's own errno, not the log's
    lines = log.value.decode(errors="replace").strip().splitlines()
    if err in (errno.EPERM, errno.EACCES) and not lines:
        raise PrivilegeError(
            f"loading BPF program {name}: {os.strerror(err)} (no verifier log)",
            "run as root (CAP_BPF + CAP_PERFMON); if root, check kernel lockdown and LSMs",
        )
    raise VerifierError(name, err, lines, truncated)


LOG_SIZES = (1 << 20, 16 << 20)  # verifier log buffers tried in turn (ENOSPC: too small)


class VerifierError(NetdiagError):
    """The kernel refused a program at load; `what` names the verifier's reason (one line),
    `log` keeps the log's tail."""

    def __init__(self, name: str, err: int, lines: list[str], truncated: bool = False) -> None:
        reason = verifier_reason(lines)
        if truncated:  # the tail is the middle of the log: say so, not pass it off as the reason
            reason = f"log truncated at {LOG_SIZES[-1] >> 20} MiB, its last line: {reason}"
        super().__init__(
            f"the kernel refused BPF program {name}: {os.strerror(err)}; verifier: " + reason,
            "run `netdiag doctor` (compiled objects are cached under ~/.cache/netdiag/bpf)",
        )
        self.errno = err
        self.log = lines[-40:]


def verifier_reason(lines: list[str]) -> str:
    """The verifier log's last line that says why: the "processed N insns" statistics line
    the kernel prints after every run, refusals included, says nothing about it."""
    for line in reversed(lines):
        line = line.strip()
        if line and not line.startswith(("processed ", "verification time", "stack depth")):
            return line
    return "(empty log)"


def map_lookup(fd: int, key: bytes, value_size: int) -> bytes | None:
    k = ctypes.create_string_buffer(key, len(key))
    v = ctypes.create_string_buffer(value_size)
    rv, err = raw(BPF_MAP_LOOKUP_ELEM, attr_buf(struct.pack("IIQQQ", fd, 0, _addr(k), _addr(v), 0)))
    if rv < 0:
        if err == errno.ENOENT:
            return None
        raise BpfErrno("BPF map lookup", err)
    return v.raw


def map_delete(fd: int, key: bytes) -> bool:
    """Delete one key; False when it was not there."""
    k = ctypes.create_string_buffer(key, len(key))
    rv, err = raw(BPF_MAP_DELETE_ELEM, attr_buf(struct.pack("IIQQQ", fd, 0, _addr(k), 0, 0)))
    if rv < 0 and err != errno.ENOENT:
        raise BpfErrno("BPF map delete", err)
    return rv >= 0


def map_keys(fd: int, key_size: int) -> list[bytes]:
    """Every key, by BPF_MAP_GET_NEXT_KEY (the fallback where batch lookups are missing)."""
    out: list[bytes] = []
    cur: ctypes.Array[ctypes.c_char] | None = None
    while True:
        nxt = ctypes.create_string_buffer(key_size)
        attr = struct.pack("IIQQ", fd, 0, _addr(cur), _addr(nxt))
        rv, err = raw(BPF_MAP_GET_NEXT_KEY, attr_buf(attr))
        if rv < 0:
            if err == errno.ENOENT:
                return out
            raise BpfErrno("BPF map iteration", err)
        out.append(nxt.raw)
        cur = nxt


def map_lookup_batch(
    fd: int, key_size: int, value_size: int, chunk: int = 256
) -> list[tuple[bytes, bytes]]:
    """Every (key, value) by BPF_MAP_LOOKUP_BATCH: a few syscalls for the whole map instead of
    two per entry. Raises BpfErrno(EINVAL) where the kernel or map type lacks batch ops."""
    out: list[tuple[bytes, bytes]] = []
    token = max(key_size, 8)
    in_b: ctypes.Array[ctypes.c_char] | None = None
    out_b = ctypes.create_string_buffer(token)
    while True:
        keys = ctypes.create_string_buffer(key_size * chunk)
        vals = ctypes.create_string_buffer(value_size * chunk)
        attr = attr_buf(
            struct.pack(
                "QQQQIIQQ", _addr(in_b), _addr(out_b), _addr(keys), _addr(vals), chunk, fd, 0, 0
            )
        )
        rv, err = raw(BPF_MAP_LOOKUP_BATCH, attr)
        if rv < 0 and err == errno.ENOSPC:  # one hash bucket holds more than `chunk`: grow
            chunk *= 2
            continue
        if rv < 0 and err != errno.ENOENT:
            raise BpfErrno("BPF batch lookup", err)
        count = struct.unpack_from("I", attr.raw, 32)[0]
        kr, vr = keys.raw, vals.raw
        out += [
            (kr[i * key_size : (i + 1) * key_size], vr[i * value_size : (i + 1) * value_size])
            for i in range(count)
        ]
        if rv < 0:  # ENOENT: that was the last chunk
            return out
        in_b, out_b = out_b, ctypes.create_string_buffer(out_b.raw, token)


@functools.cache
def possible_cpus() -> int:
    """Number of possible CPUs: the slots of a per-CPU map value (/sys/devices/system/cpu)."""
    with open("/sys/devices/system/cpu/possible") as f:
        text = f.read().strip()
    n = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        n = max(n, int(hi or lo) + 1)
    return n


def raw_tracepoint_open(prog_fd: int) -> int:
    """BPF_RAW_TRACEPOINT_OPEN of a tracing program loaded with its attach_btf_id (tp_btf):
    the returned fd is a BPF link; closing it (or exiting) detaches."""
    return call(BPF_RAW_TRACEPOINT_OPEN, struct.pack("QI", 0, prog_fd), "attaching tp_btf")


def attach_tracepoint(prog_fd: int, tp_id: int) -> int:
    """perf_event_open(PERF_TYPE_TRACEPOINT) + PERF_EVENT_IOC_SET_BPF + ENABLE, as bcc does.
    The returned perf fd is the attachment: closing it (or exiting) detaches."""
    attr = ctypes.create_string_buffer(
        struct.pack(
            "IIQQQQQI", PERF_TYPE_TRACEPOINT, _PERF_ATTR_SIZE, tp_id, 1, PERF_SAMPLE_RAW, 0, 0, 1
        ).ljust(_PERF_ATTR_SIZE, b"\0"),
        _PERF_ATTR_SIZE,
    )
    nr = _nr(_NR_PERF_EVENT_OPEN, "perf_event_open")
    pfd = int(_libc().syscall(nr, attr, -1, 0, -1, PERF_FLAG_FD_CLOEXEC))
    if pfd < 0:
        err = ctypes.get_errno()
        msg = f"perf_event_open on tracepoint id {tp_id}: {os.strerror(err)}"
        if err in (errno.EPERM, errno.EACCES):
            raise PrivilegeError(msg, "run as root (CAP_PERFMON)")
        raise NetdiagError(msg, "run `netdiag doctor` to check tracefs and tracepoints")
    try:
        fcntl.ioctl(pfd, PERF_EVENT_IOC_SET_BPF, prog_fd)
        fcntl.ioctl(pfd, PERF_EVENT_IOC_ENABLE, 0)
    except OSError as e:
        os.close(pfd)
        raise NetdiagError(f"attaching BPF program to tracepoint id {tp_id}: {e}") from e
    return pfd
