"""How a probe's kernel half gets into the kernel: two interchangeable loaders.

- `light` (default): bytecode compiled by bcc in a short-lived child, cached per program
  version (netdiag/kernel/bpf_compile.py), loaded and attached with raw bpf() and perf-event
  calls, maps read with batched lookups. bcc, clang and LLVM are never imported here, so a
  long-running trace-peers or exporter stays small; a cached program starts in milliseconds.
- `bcc`: the previous way, bcc.BPF in this process (LLVM stays resident). Chosen with
  NETDIAG_BPF_LOADER=bcc; `bench probes launch` runs both side by side.

Both give a Loaded: tables by name (items/delete/sum), program fds, attachment count, ksym.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from netdiag.errors import NetdiagError
from netdiag.kernel import bcc_loader, bpf_compile, bpf_object, tracefs
from netdiag.kernel.bcc_loader import Defines, LoadEnv
from netdiag.kernel.kallsyms import Kallsyms

log = logging.getLogger("netdiag.trace.loaders")
LOADERS = ("light", "bcc")
ENV_VAR = "NETDIAG_BPF_LOADER"


class Table(Protocol):
    def items(self) -> Iterable[tuple[Any, Any]]: ...

    def delete(self, key: Any) -> None: ...

    def sum(self, index: int) -> int: ...


class Loaded(Protocol):
    @property
    def from_cache(self) -> bool | None: ...  # light: whether the bytecode came from the cache

    def table(self, name: str) -> Table: ...

    def prog_fds(self) -> dict[str, int]: ...

    def attached(self) -> int: ...

    def ksym(self, addr: int) -> str: ...

    def close(self) -> None: ...


def chosen(name: str | None = None) -> str:
    loader = name or os.environ.get(ENV_VAR) or "light"
    if loader not in LOADERS:
        raise NetdiagError(f"{ENV_VAR}={loader!r} is not a loader", f"use one of {LOADERS}")
    return loader


def load(
    src: Path,
    defines: Defines,
    env: LoadEnv,
    loader: str | None = None,
    btf_ids: dict[str, int] | None = None,
) -> Loaded:
    """`btf_ids`: event -> vmlinux BTF id of btf_trace_EVENT for tp_btf programs (light only)."""
    if chosen(loader) == "bcc":
        return BccLoaded(src, defines, env)
    return LightLoaded(src, defines, env, btf_ids)


class _LightTable:
    def __init__(self, m: bpf_object.Map) -> None:
        self.m = m

    def items(self) -> Iterable[tuple[Any, Any]]:
        return self.m.items()

    def delete(self, key: Any) -> None:
        self.m.delete(key)

    def sum(self, index: int) -> int:
        return self.m.sum(index)


class LightLoaded:
    _kallsyms = Kallsyms()  # shared: read once per process, on the first ksym field

    def __init__(
        self, src: Path, defines: Defines, env: LoadEnv, btf_ids: dict[str, int] | None = None
    ) -> None:
        obj, self.from_cache = bpf_compile.compiled(src, defines, env)
        tfs = tracefs.ensure(env.host)
        try:
            self.obj = bpf_object.load(obj, tfs, btf_ids)
        except NetdiagError:
            if not self.from_cache:
                raise
            # a cached object this kernel refuses (e.g. a changed verifier): compile afresh
            log.warning("cached BPF object of %s refused; compiling again", src.name)
            bpf_compile.forget(src, defines, env)
            obj, self.from_cache = bpf_compile.compiled(src, defines, env)
            self.obj = bpf_object.load(obj, tfs, btf_ids)

    def table(self, name: str) -> Table:
        try:
            return _LightTable(self.obj.maps[name])
        except KeyError:
            raise NetdiagError(f"the BPF program has no map {name!r}") from None

    def prog_fds(self) -> dict[str, int]:
        return dict(self.obj.prog_fds)

    def attached(self) -> int:
        return len(self.obj.perf_fds)

    def ksym(self, addr: int) -> str:
        return self._kallsyms.name(addr)

    def close(self) -> None:
        self.obj.close()


class _BccTable:
    def __init__(self, t: Any) -> None:
        self.t = t

    def items(self) -> Iterable[tuple[Any, Any]]:
        return list(self.t.items())

    def delete(self, key: Any) -> None:
        with contextlib.suppress(KeyError):
            del self.t[key]

    def sum(self, index: int) -> int:
        if hasattr(self.t, "sum"):  # per-CPU array: add the CPUs' slots
            return int(self.t.sum(self.t.Key(index)).value)
        return int(self.t[self.t.Key(index)].value)


class BccLoaded:
    from_cache: bool | None = None

    def __init__(self, src: Path, defines: Defines, env: LoadEnv) -> None:
        self.bpf = bcc_loader.load(src, defines, env)

    def table(self, name: str) -> Table:
        return _BccTable(self.bpf[name.encode()])

    def prog_fds(self) -> dict[str, int]:
        return {
            k.decode() if isinstance(k, bytes) else str(k): int(f.fd)
            for k, f in self.bpf.funcs.items()
        }

    def attached(self) -> int:
        return int(self.bpf.num_open_tracepoints())

    def ksym(self, addr: int) -> str:
        s = bcc_loader.import_bcc().BPF.ksym(addr)
        return s.decode() if isinstance(s, bytes) else str(s)

    def close(self) -> None:
        self.bpf.cleanup()
