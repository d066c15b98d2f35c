"""Compile and load BPF C through bcc, with header resolution and `-D` parameters.

Parameters are passed as compiler defines (`-DNAME=VALUE`), never spliced into the C text,
so a program's source is the file in `bpf/` and only its defines vary. `render()` gives the
final C as the compiler sees it (defines first) for `--ebpf`.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netdiag.errors import InputError, KernelFeatureError, NetdiagError, PrivilegeError
from netdiag.kernel import caps, headers, tracefs
from netdiag.kernel.host import REAL, HostPaths, data_dir

log = logging.getLogger("netdiag.kernel.bcc")
BPF_DIR = data_dir("bpf")
_IDENT = re.compile(r"^[A-Z_][A-Z0-9_]*$")

Defines = Mapping[str, int | str]


def bpf_source(name: str) -> Path:
    """Path of `bpf/NAME.bpf.c` (kernel half of a probe or policy)."""
    p = BPF_DIR / f"{name}.bpf.c"
    if not p.exists():
        raise InputError(f"no BPF program {p}", "check the name against `ls bpf/`")
    return p


def cflags(defines: Defines) -> list[str]:
    out = [f"-I{BPF_DIR}"]
    for k, v in defines.items():
        if not _IDENT.match(k):
            raise InputError(f"bad BPF define name {k!r}", "use UPPER_CASE identifiers")
        if isinstance(v, bool) or not isinstance(v, int | str):
            raise InputError(f"BPF define {k} must be int or str, got {type(v).__name__}")
        if isinstance(v, str) and not re.fullmatch(r"[A-Za-z0-9_.x]+", v):
            raise InputError(f"BPF define {k}={v!r} is not a plain token")
        out.append(f"-D{k}={v}")
    return out


def render(src: Path, defines: Defines) -> str:
    """The final C of a program: the defines bcc passes, then the source."""
    lines = [f"#define {k} {v}" for k, v in defines.items()]
    return "\n".join(
        [
            f"/* {src.name} — compiled by bcc with these -D parameters */",
            *lines,
            "",
            src.read_text(),
        ]
    )


@dataclass(frozen=True)
class LoadEnv:
    host: HostPaths = REAL
    cache: Path | None = None


def prepare(env: LoadEnv = LoadEnv()) -> headers.HeaderTree:
    """Everything bcc needs before compiling: privileges, tracefs, a header tree."""
    caps.require("CAP_BPF", "CAP_PERFMON", why="loading eBPF programs", host=env.host)
    tracefs.ensure(env.host)
    tree = headers.find(env.host, env.cache)
    if os.environ.get("BCC_KERNEL_SOURCE") != str(tree.path):
        warning = tree.warning()
        if warning:
            log.warning("%s", warning)
    os.environ["BCC_KERNEL_SOURCE"] = str(tree.path)
    return tree


def import_bcc() -> Any:
    try:
        import bcc
    except ImportError as e:
        raise KernelFeatureError(
            f"the bcc Python module does not import ({e})",
            "run `make setup` (installs python3-bpfcc and links it into .venv)",
        ) from e
    return bcc


def load(src: Path, defines: Defines | None = None, env: LoadEnv = LoadEnv()) -> Any:
    """Compile `src` with bcc and return the `bcc.BPF` object (tracepoints auto-attach)."""
    defines = dict(defines or {})
    prepare(env)
    bcc = import_bcc()
    try:
        return bcc.BPF(src_file=str(src).encode(), cflags=cflags(defines))
    except PermissionError as e:
        raise PrivilegeError(f"loading {src.name}: {e}", "run as root") from e
    except Exception as e:  # bcc raises bare Exception on compile/load failure
        raise NetdiagError(
            f"bcc could not compile or load {src.name}: {e}",
            "run `netdiag doctor` to check headers and tracepoints; --debug shows the log",
        ) from e
