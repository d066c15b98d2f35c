"""BPF links through the raw bpf() syscall: create, pin, open, inspect.

bcc 0.26 (Debian 12) attaches cgroup programs only with the legacy BPF_PROG_ATTACH, an
attachment that outlives its creator and is recorded nowhere. A BPF link (BPF_LINK_CREATE) on
the program fd bcc gives us instead lives exactly as long as its fds and pins: pin it under
bpffs, record the pin, and unlinking the pin detaches the program.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
from pathlib import Path

from netdiag.errors import KernelFeatureError, NetdiagError, PrivilegeError

# syscall numbers of bpf(2) per machine
_NR_BPF = {
    "x86_64": 321,
    "aarch64": 280,
    "riscv64": 280,
    "armv7l": 386,
    "ppc64le": 361,
    "s390x": 351,
}

BPF_OBJ_PIN = 6
BPF_OBJ_GET = 7
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_LINK_CREATE = 28
BPF_LINK_DETACH = 34

BPF_CGROUP_SOCK_OPS = 3  # enum bpf_attach_type
_ATTR_SIZE = 128  # bigger than any union bpf_attr member we use; the kernel checks zero tail


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def _bpf(cmd: int, attr: bytes, what: str) -> int:
    nr = _NR_BPF.get(platform.machine())
    if nr is None:
        raise KernelFeatureError(
            f"bpf() syscall number unknown on {platform.machine()}",
            "add it to netdiag/kernel/bpf_link.py",
        )
    buf = ctypes.create_string_buffer(attr.ljust(_ATTR_SIZE, b"\0"), _ATTR_SIZE)
    rv = _libc().syscall(nr, cmd, buf, _ATTR_SIZE)
    if rv < 0:
        err = ctypes.get_errno()
        msg = f"{what}: {os.strerror(err)}"
        if err in (errno.EPERM, errno.EACCES):
            raise PrivilegeError(msg, "run as root (CAP_BPF + CAP_NET_ADMIN)")
        if err in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS):
            raise KernelFeatureError(
                msg, "this kernel lacks BPF links for this attach type (needs ≥ 5.7)"
            )
        raise NetdiagError(msg)
    return int(rv)


def link_create(prog_fd: int, target_fd: int, attach_type: int) -> int:
    """BPF_LINK_CREATE: attach prog to target (e.g. a cgroup dir fd); returns the link fd."""
    attr = struct.pack("IIII", prog_fd, target_fd, attach_type, 0)
    return _bpf(BPF_LINK_CREATE, attr, "creating BPF link")


def pin(fd: int, path: Path) -> None:
    """BPF_OBJ_PIN fd at path (which must be on a bpffs)."""
    cpath = ctypes.create_string_buffer(str(path).encode())
    attr = struct.pack("QII", ctypes.addressof(cpath), fd, 0)
    _bpf(BPF_OBJ_PIN, attr, f"pinning BPF object at {path}")


def open_pinned(path: Path) -> int:
    """BPF_OBJ_GET: an fd for the object pinned at path."""
    cpath = ctypes.create_string_buffer(str(path).encode())
    attr = struct.pack("QII", ctypes.addressof(cpath), 0, 0)
    return _bpf(BPF_OBJ_GET, attr, f"opening pinned BPF object {path}")


def link_info(link_fd: int) -> dict[str, int]:
    """type, id, prog_id, and for cgroup links cgroup_id and attach_type (struct bpf_link_info)."""
    info = ctypes.create_string_buffer(64)
    attr = struct.pack("IIQ", link_fd, 64, ctypes.addressof(info))
    _bpf(BPF_OBJ_GET_INFO_BY_FD, attr, "reading BPF link info")
    ltype, lid, prog_id = struct.unpack_from("III", info.raw, 0)
    # union at offset 16 (after 4-byte pad): cgroup = { __u64 cgroup_id; __u32 attach_type; }
    cgroup_id, attach_type = struct.unpack_from("QI", info.raw, 16)
    return {
        "type": ltype,
        "id": lid,
        "prog_id": prog_id,
        "cgroup_id": cgroup_id,
        "attach_type": attach_type,
    }


def detach(link_fd: int) -> None:
    """BPF_LINK_DETACH: detach now even if other fds or pins still hold the link."""
    _bpf(BPF_LINK_DETACH, struct.pack("I", link_fd), "detaching BPF link")
