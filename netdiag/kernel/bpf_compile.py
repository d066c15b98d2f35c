"""Compile BPF C with bcc in a short-lived child process, cached per program version.

bcc links LLVM and clang: importing it costs ~130 MB of resident memory that never goes away.
So the long-running tracer never imports it. `compiled()` returns a BpfObject (bpf_object.py)
from the cache when one exists for this exact program — source text, the headers of bpf/,
the -D defines, the kernel release and the header tree — and otherwise runs
`python -m netdiag.kernel.bpf_compile` once, which compiles with bcc, extracts the bytecode
and map specs, writes the cache entry and exits (taking LLVM with it).

The cache holds bytecode only; the kernel verifies it at every load, so a stale entry can
fail to load but never run unchecked. Entries live in `$NETDIAG_CACHE/bpf` (or
~/.cache/netdiag/bpf); deleting that directory is always safe.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from netdiag.errors import NetdiagError, PrivilegeError
from netdiag.kernel import bcc_loader
from netdiag.kernel.bcc_loader import Defines, LoadEnv
from netdiag.kernel.bpf_object import BpfObject
from netdiag.kernel.host import cache_dir

KEEP = 64  # cache entries kept (~8 kB each)


def cache_root(env: LoadEnv) -> Path:
    return (env.cache or cache_dir()) / "bpf"


def cache_key(src: Path, defines: Defines, header_tree: Path) -> str:
    h = hashlib.sha256()
    h.update(src.read_bytes())
    for hdr in sorted(bcc_loader.BPF_DIR.glob("*.h")):  # what `#include "netdiag.h"` pulls in
        h.update(hdr.name.encode() + b"\0" + hdr.read_bytes())
    h.update(json.dumps(bcc_loader.cflags(defines)).encode())
    u = os.uname()
    h.update(f"{u.release}\0{u.version}\0{u.machine}\0{header_tree}".encode())
    return h.hexdigest()[:32]


def _read(path: Path) -> BpfObject | None:
    try:
        return BpfObject.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # missing, torn or of another format: compile again


def compiled(src: Path, defines: Defines, env: LoadEnv | None = None) -> tuple[BpfObject, bool]:
    """The object for `src` + `defines` on this kernel, and whether it came from the cache."""
    env = env or LoadEnv()
    tree = bcc_loader.prepare(env)
    path = entry(src, defines, env, tree.path)
    obj = _read(path)
    if obj is not None:
        return obj, True
    run_child(src, defines, path)
    obj = _read(path)
    if obj is None:
        raise NetdiagError(f"the BPF compile child wrote no object at {path}")
    return obj, False


def forget(src: Path, defines: Defines, env: LoadEnv | None = None) -> None:
    """Drop the cache entry of one program (after the kernel refused it)."""
    env = env or LoadEnv()
    entry(src, defines, env, bcc_loader.prepare(env).path).unlink(missing_ok=True)


def entry(src: Path, defines: Defines, env: LoadEnv, header_tree: Path) -> Path:
    name = src.name.removesuffix(".bpf.c")
    return cache_root(env) / f"{name}-{cache_key(src, defines, header_tree)}.json"


def prune(root: Path, keep: int = KEEP) -> None:
    """Keep the `keep` newest entries (each port filter is its own program version)."""
    dated = []
    for p in root.glob("*.json"):
        with contextlib.suppress(OSError):  # another compile child may prune at the same time
            dated.append((p.stat().st_mtime, p))
    for _t, old in sorted(dated, reverse=True)[keep:]:
        old.unlink(missing_ok=True)


def run_child(src: Path, defines: Defines, out: Path) -> None:
    argv = [sys.executable, "-m", "netdiag.kernel.bpf_compile", str(src), json.dumps(dict(defines))]
    r = subprocess.run([*argv, str(out)], capture_output=True, text=True, env=os.environ.copy())
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-6:]
        msg = " | ".join(tail) or f"exit status {r.returncode}"
        if r.returncode == 77:
            raise PrivilegeError(f"compiling {src.name}: {msg}", "run as root")
        raise NetdiagError(
            f"bcc could not compile {src.name}: {msg}",
            "run `netdiag doctor` to check headers and tracepoints; --debug shows the log",
        )


# --- the child ------------------------------------------------------------------------------


def extract(bpf: Any) -> BpfObject:
    """Bytecode, map specs and type descriptions of a compiled bcc module (programs unloaded)."""
    import ctypes

    from netdiag.kernel.bpf_object import MapSpec, ProgSpec, unpatch

    lib = bpf_lib()
    mod = bpf.module
    maps, fd_to_map = [], {}
    for i in range(lib.bpf_num_tables(mod)):
        name = lib.bpf_table_name(mod, i)
        fd_to_map[lib.bpf_table_fd_id(mod, i)] = i
        maps.append(
            MapSpec(
                name=name.decode(),
                type=lib.bpf_table_type_id(mod, i),
                key_size=lib.bpf_table_key_size_id(mod, i),
                value_size=lib.bpf_table_leaf_size_id(mod, i),
                max_entries=lib.bpf_table_max_entries_id(mod, i),
                flags=lib.bpf_table_flags_id(mod, i),
                key_desc=json.loads(lib.bpf_table_key_desc(mod, name).decode()),
                leaf_desc=json.loads(lib.bpf_table_leaf_desc(mod, name).decode()),
            )
        )
    progs = []
    for i in range(lib.bpf_num_functions(mod)):
        fname = lib.bpf_function_name(mod, i)
        start, size = lib.bpf_function_start(mod, fname), lib.bpf_function_size(mod, fname)
        insns, relocs = unpatch(ctypes.string_at(start, size), fd_to_map)
        progs.append(ProgSpec(fname.decode(), insns, relocs))
    return BpfObject(
        maps=tuple(maps),
        progs=tuple(progs),
        license=lib.bpf_module_license(mod).decode(),
        kern_version=int(lib.bpf_module_kern_version(mod)),
    )


def bpf_lib() -> Any:
    """libbcc with the by-index table calls bcc's Python does not declare."""
    import ctypes

    from bcc.libbcc import lib  # type: ignore[import-not-found,unused-ignore]

    for fn, res in (
        ("bpf_num_tables", ctypes.c_ulonglong),
        ("bpf_table_name", ctypes.c_char_p),
        ("bpf_table_fd_id", ctypes.c_int),
        ("bpf_table_key_size_id", ctypes.c_ulonglong),
        ("bpf_table_leaf_size_id", ctypes.c_ulonglong),
    ):
        f = getattr(lib, fn)
        f.restype = res
        f.argtypes = (
            [ctypes.c_void_p]
            if fn == "bpf_num_tables"
            else [
                ctypes.c_void_p,
                ctypes.c_ulonglong,
            ]
        )
    return lib


def child_main(argv: list[str]) -> int:
    src, defines, out = Path(argv[0]), json.loads(argv[1]), Path(argv[2])
    bcc = bcc_loader.import_bcc()

    class Unattached(bcc.BPF):  # type: ignore[misc,name-defined]
        def _trace_autoload(self) -> None:  # the parent loads and attaches; we only compile
            return None

    try:
        b = Unattached(src_file=str(src).encode(), cflags=bcc_loader.cflags(defines))
    except PermissionError as e:
        print(f"{e}", file=sys.stderr)
        return 77
    try:
        doc = extract(b).to_json()
    finally:
        b.cleanup()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, out)  # atomic: a concurrent reader sees the whole object or none
    prune(out.parent)
    return 0


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
