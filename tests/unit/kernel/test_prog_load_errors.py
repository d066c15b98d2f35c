"""bpf_sys.prog_load tells a verifier refusal (EACCES, or EPERM with the capabilities) from a
missing privilege by asking again with a log: a log means the verifier refused (a load error
with its reason line), no log (or EPERM without CAP_BPF / CAP_SYS_ADMIN) means privilege."""

from __future__ import annotations

import ctypes
import errno
import struct

import pytest

from netdiag.errors import PrivilegeError
from netdiag.kernel import bpf_sys

LOG = (
    "0: R1=ctx() R10=fp0\n"
    "0: (79) r2 = *(u64 *)(r1 +0)\n"
    "1: (61) r3 = *(u32 *)(r2 +99999)\n"
    "access beyond struct tcp_sock at off 99999 size 4\n"
    "processed 2 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0\n"
)


def _kernel(monkeypatch: pytest.MonkeyPatch, err: int, log: str, cap_bpf: bool) -> list[int]:
    """A bpf() that refuses every load with `err`, writing `log` when given a log buffer."""
    sizes: list[int] = []

    def raw(cmd: int, attr: ctypes.Array[ctypes.c_char]) -> tuple[int, int]:
        assert cmd == bpf_sys.BPF_PROG_LOAD
        _level, size, buf = struct.unpack_from("IIQ", attr.raw, 24)
        sizes.append(size)
        if buf and log:
            data = log.encode() + b"\0"
            ctypes.memmove(buf, data, min(len(data), size))
        return -1, err

    monkeypatch.setattr(bpf_sys, "raw", raw)
    monkeypatch.setattr(bpf_sys.caps, "has", lambda cap, host=None: cap_bpf)
    return sizes


def _load() -> int:
    return bpf_sys.prog_load(bpf_sys.BPF_PROG_TYPE_TRACING, b"\0" * 16, "GPL", 0, "p")


def test_eacces_with_a_verifier_log_is_a_load_error_with_its_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sizes = _kernel(monkeypatch, errno.EACCES, LOG, cap_bpf=True)
    with pytest.raises(bpf_sys.VerifierError) as ei:
        _load()
    e = ei.value
    assert not isinstance(e, PrivilegeError)
    assert sizes[0] == 0 and sizes[1] > 0  # asked again, with a log
    assert e.what.endswith("verifier: access beyond struct tcp_sock at off 99999 size 4")
    assert "\n" not in e.what and "run as root" not in str(e)
    assert e.errno == errno.EACCES and e.log[-1].startswith("processed 2 insns")


def test_eperm_with_the_capabilities_and_a_log_is_a_load_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _kernel(monkeypatch, errno.EPERM, LOG, cap_bpf=True)
    with pytest.raises(bpf_sys.VerifierError, match="access beyond struct tcp_sock"):
        _load()


def test_eperm_without_the_capabilities_is_privilege_without_a_second_try(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sizes = _kernel(monkeypatch, errno.EPERM, LOG, cap_bpf=False)
    with pytest.raises(PrivilegeError, match="run as root"):
        _load()
    assert sizes == [0]


@pytest.mark.parametrize("err", [errno.EACCES, errno.EPERM])
def test_a_refusal_with_no_log_is_privilege(monkeypatch: pytest.MonkeyPatch, err: int) -> None:
    _kernel(monkeypatch, err, "", cap_bpf=True)
    with pytest.raises(PrivilegeError, match="no verifier log"):
        _load()


def test_other_refusals_stay_load_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    _kernel(monkeypatch, errno.EINVAL, "invalid attach_btf_id 7\n", cap_bpf=True)
    with pytest.raises(bpf_sys.VerifierError, match="verifier: invalid attach_btf_id 7"):
        _load()


def test_a_log_too_large_for_the_buffer_is_asked_again_and_said_truncated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before 6.4 a verifier log larger than its buffer fails the load with ENOSPC: the
    loader asks again with a larger buffer and, still truncated, reports the refusal's own
    errno and says the line is from a truncated log."""
    calls: list[int] = []

    def raw(cmd: int, attr: ctypes.Array[ctypes.c_char]) -> tuple[int, int]:
        _level, size, buf = struct.unpack_from("IIQ", attr.raw, 24)
        calls.append(size)
        if not buf:
            return -1, errno.EACCES
        data = b"1: (61) r3 = *(u32 *)(r2 +8)\n" * 4 + b"\0"
        ctypes.memmove(buf, data, min(len(data), size))
        return -1, errno.ENOSPC

    monkeypatch.setattr(bpf_sys, "raw", raw)
    monkeypatch.setattr(bpf_sys.caps, "has", lambda cap, host=None: True)
    with pytest.raises(bpf_sys.VerifierError) as ei:
        _load()
    assert calls == [0, *bpf_sys.LOG_SIZES]
    assert ei.value.errno == errno.EACCES
    assert "Permission denied" in ei.value.what and "log truncated at 16 MiB" in ei.value.what


def test_a_log_that_fits_the_larger_buffer_gives_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def raw(cmd: int, attr: ctypes.Array[ctypes.c_char]) -> tuple[int, int]:
        _level, size, buf = struct.unpack_from("IIQ", attr.raw, 24)
        if not buf:
            return -1, errno.EACCES
        if size < bpf_sys.LOG_SIZES[-1]:
            return -1, errno.ENOSPC
        data = LOG.encode() + b"\0"
        ctypes.memmove(buf, data, len(data))
        return -1, errno.EACCES

    monkeypatch.setattr(bpf_sys, "raw", raw)
    monkeypatch.setattr(bpf_sys.caps, "has", lambda cap, host=None: True)
    with pytest.raises(bpf_sys.VerifierError) as ei:
        _load()
    assert ei.value.what.endswith("verifier: access beyond struct tcp_sock at off 99999 size 4")
