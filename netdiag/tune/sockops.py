"""Per-connection congestion control by cgroup and port: bpf/cc_sockops.bpf.c attached to a
cgroup v2 directory as a BPF link pinned in bpffs.

Why a pinned link: the policy must outlive the CLI process, yet never outlive netdiag's
record of it. The journal records the pin path before the link exists; a crash before the
pin leaves only the creating process's fd, which the kernel closes (link gone). Revert
detaches the link (BPF_LINK_DETACH) and unlinks the pin. bcc 0.26 can only do the legacy
BPF_PROG_ATTACH (persists with no owner), so the link is made with the raw bpf() syscall.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from netdiag.errors import InputError, NetdiagError
from netdiag.kernel import bcc_loader, bpf_link, bpffs
from netdiag.tune.env import TuneEnv

PROGRAM = "cc_sockops"
MAX_PORTS = 2


def pin_dir(env: TuneEnv) -> Path:
    return (bpffs.mountpoint(env.host) or bpffs.DEFAULT) / env.pin_subdir


def new_pin_path(env: TuneEnv) -> str:
    return str(pin_dir(env) / f"cc-{secrets.token_hex(4)}")


def defines(cc: str, ports: list[int]) -> dict[str, int | str]:
    if len(ports) > MAX_PORTS:
        raise InputError(
            f"at most {MAX_PORTS} --port values per invocation (got {len(ports)})",
            "run netdiag tune once per pair of ports",
        )
    for p in ports:
        if not 0 < p < 65536:
            raise InputError(f"--port {p} is not a TCP port", "give 1..65535")
    padded = [*ports, 0, 0]
    return {
        "CC_NAME": cc,
        "CC_PORT": padded[0],
        "CC_PORT2": padded[1],
        "CC_ALL_PORTS": 0 if ports else 1,
    }


def attach(cc: str, ports: list[int], cgroup: str, pin_path: str, env: TuneEnv) -> None:
    """Attach cc_sockops (cc for `ports`, or every port) to `cgroup`, its link pinned at
    `pin_path`."""
    prog = bcc_loader.load(bcc_loader.bpf_source(PROGRAM), defines(cc, ports))
    try:
        bcc = bcc_loader.import_bcc()
        try:
            fn = prog.load_func(PROGRAM, bcc.BPF.SOCK_OPS)
        except Exception as e:  # bcc raises bare Exception when the verifier refuses
            raise NetdiagError(
                f"the kernel refused {PROGRAM}: {e}", "run with --debug; check `netdiag doctor`"
            ) from e
        bpffs.ensure(env.host)
        pin = Path(pin_path)
        pin.parent.mkdir(parents=True, exist_ok=True)
        cg_fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
        try:
            link_fd = bpf_link.link_create(fn.fd, cg_fd, bpf_link.BPF_CGROUP_SOCK_OPS)
        finally:
            os.close(cg_fd)
        try:
            bpf_link.pin(link_fd, pin)
        finally:
            os.close(link_fd)  # the pin now holds the link (or, if pinning failed, nothing does)
    finally:
        prog.cleanup()


def detach(pin: Path) -> str | None:
    """Detach the link pinned at `pin` and remove the pin (and its empty directories)."""
    if not pin.exists():
        return "link was never pinned (apply stopped before it); nothing attached"
    note = None
    fd = bpf_link.open_pinned(pin)
    try:
        bpf_link.detach(fd)
    except NetdiagError as e:
        # e.g. the cgroup was removed meanwhile; dropping the pin still releases our link
        note = f"detach: {e.what}; unpinned"
    finally:
        os.close(fd)
    pin.unlink()
    with contextlib.suppress(OSError):  # leave directories that still hold others' pins
        pin.parent.rmdir()
        pin.parent.parent.rmdir()
        pin.parent.parent.parent.rmdir()
    return note


def unpin(pin: Path) -> str | None:
    """Detach and remove a pinned link netdiag made (used for orphans without a record)."""
    return detach(pin)


def live_pins(env: TuneEnv) -> list[dict[str, object]]:
    """Pinned links under netdiag's bpffs directory, with their kernel ids."""
    d = pin_dir(env)
    out: list[dict[str, object]] = []
    if not d.is_dir():
        return out
    for p in sorted(d.iterdir()):
        row: dict[str, object] = {"pin": str(p)}
        try:
            fd = bpf_link.open_pinned(p)
            try:
                row.update(bpf_link.link_info(fd))
            finally:
                os.close(fd)
        except NetdiagError as e:
            row["error"] = e.what
        out.append(row)
    return out
