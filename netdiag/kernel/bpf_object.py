"""A compiled BPF program set that loads without bcc: bytecode + map specs + type descriptions.

bcc compiles C to bytecode whose map references are the fds of maps it created (`ld_imm64`
with src_reg BPF_PSEUDO_MAP_FD). `extract()` (run in the compile child, bpf_compile.py) turns
those fds into map indexes and keeps each map's shape and bcc's key/leaf type descriptions;
`load()` (run in the long-lived process) creates fresh maps, patches their fds into the code,
loads the programs with BPF_PROG_LOAD and attaches tracepoints through perf events. The
object is plain JSON, cached per source text + defines + kernel (bpf_compile.py).
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netdiag.errors import NetdiagError
from netdiag.kernel import bpf_sys

FORMAT = 1
_LD_IMM64 = 0x18
_PSEUDO_MAP_FD = 1


@dataclass(frozen=True)
class MapSpec:
    name: str
    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    key_desc: Any  # bcc's JSON type description of the key / leaf
    leaf_desc: Any


@dataclass(frozen=True)
class ProgSpec:
    name: str  # bcc's function name: tracepoint__CATEGORY__EVENT
    insns: bytes
    relocs: tuple[tuple[int, int], ...]  # (instruction index, map index)

    @property
    def raw_tracepoint(self) -> str | None:
        """The event of a `RAW_TRACEPOINT_PROBE(event)`, loaded here as tp_btf (BTF-typed)."""
        if not self.name.startswith("raw_tracepoint__"):
            return None
        return self.name.removeprefix("raw_tracepoint__")

    @property
    def tracepoint(self) -> tuple[str, str] | None:
        if not self.name.startswith("tracepoint__"):
            return None
        cat, _, ev = self.name.removeprefix("tracepoint__").partition("__")
        return cat, ev


@dataclass(frozen=True)
class BpfObject:
    maps: tuple[MapSpec, ...]
    progs: tuple[ProgSpec, ...]
    license: str
    kern_version: int

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "license": self.license,
            "kern_version": self.kern_version,
            "maps": [m.__dict__ for m in self.maps],
            "progs": [
                {
                    "name": p.name,
                    "insns": base64.b64encode(p.insns).decode(),
                    "relocs": [list(r) for r in p.relocs],
                }
                for p in self.progs
            ],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> BpfObject:
        if d.get("format") != FORMAT:
            raise ValueError(f"object format {d.get('format')} (want {FORMAT})")
        return cls(
            maps=tuple(MapSpec(**m) for m in d["maps"]),
            progs=tuple(
                ProgSpec(
                    p["name"],
                    base64.b64decode(p["insns"]),
                    tuple((int(i), int(m)) for i, m in p["relocs"]),
                )
                for p in d["progs"]
            ),
            license=d["license"],
            kern_version=int(d["kern_version"]),
        )


def unpatch(insns: bytes, fd_to_map: dict[int, int]) -> tuple[bytes, tuple[tuple[int, int], ...]]:
    """Map fds in `ld_imm64 rX, map_fd` -> relocations (index, map), the imm zeroed."""
    code = bytearray(insns)
    relocs = []
    for i in range(len(code) // 8):
        op, regs, _off, imm = struct.unpack_from("<BBhi", code, i * 8)
        if op == _LD_IMM64 and (regs >> 4) == _PSEUDO_MAP_FD:
            if imm not in fd_to_map:
                raise ValueError(f"instruction {i} references fd {imm}, not a map of this module")
            relocs.append((i, fd_to_map[imm]))
            struct.pack_into("<i", code, i * 8 + 4, 0)
    return bytes(code), tuple(relocs)


def patch(prog: ProgSpec, map_fds: list[int]) -> bytes:
    code = bytearray(prog.insns)
    for i, m in prog.relocs:
        struct.pack_into("<i", code, i * 8 + 4, map_fds[m])
    return bytes(code)


_CTYPES: dict[str, Any] = {
    "_Bool": ctypes.c_bool,
    "char": ctypes.c_char,
    "unsigned char": ctypes.c_ubyte,
    "short": ctypes.c_short,
    "unsigned short": ctypes.c_ushort,
    "int": ctypes.c_int,
    "unsigned int": ctypes.c_uint,
    "long": ctypes.c_long,
    "unsigned long": ctypes.c_ulong,
    "long long": ctypes.c_longlong,
    "unsigned long long": ctypes.c_ulonglong,
    "__int128": ctypes.c_int64 * 2,
    "unsigned __int128": ctypes.c_uint64 * 2,
}


def ctype_of(desc: Any) -> Any:
    """A ctypes type from bcc's key/leaf description (the layout bcc's own Python builds)."""
    if isinstance(desc, str):
        return _CTYPES[desc]
    anon: list[str] = []
    fields: list[tuple[Any, ...]] = []
    for t in desc[1]:
        if len(t) == 2:
            fields.append((t[0], ctype_of(t[1])))
        elif isinstance(t[2], list):
            fields.append((t[0], ctype_of(t[1]) * t[2][0]))
        elif isinstance(t[2], int):  # bit field
            fields.append((t[0], ctype_of(t[1]), t[2]))
        elif t[2] in ("union", "struct", "struct_packed"):
            name = t[0] or f"__anon{len(anon)}"
            if not t[0]:
                anon.append(name)
            fields.append((name, ctype_of(t)))
        else:
            raise ValueError(f"cannot decode BPF type {t}")
    kind = desc[2] if len(desc) > 2 else "struct"
    base = ctypes.Union if kind == "union" else ctypes.Structure
    ns: dict[str, Any] = {"_anonymous_": anon, "_fields_": fields}
    if kind == "struct_packed":
        ns["_pack_"] = 1
    return type(str(desc[0]), (base,), ns)


class Map:
    """One map of a loaded object: whole-map reads in a few syscalls, decoded to ctypes."""

    def __init__(self, spec: MapSpec, fd: int) -> None:
        self.spec, self.fd = spec, fd
        self.Key = ctype_of(spec.key_desc)
        self.Leaf = ctype_of(spec.leaf_desc)
        self.percpu = spec.type in bpf_sys.PERCPU_TYPES
        self.ncpu = bpf_sys.possible_cpus() if self.percpu else 1
        # per-CPU values come as one 8-byte-aligned slot per possible CPU
        self.slot = (spec.value_size + 7) // 8 * 8 if self.percpu else spec.value_size
        self._batch = True

    def raw_items(self) -> list[tuple[bytes, bytes]]:
        ks, vs = self.spec.key_size, self.slot * self.ncpu
        if self._batch:
            try:
                return bpf_sys.map_lookup_batch(self.fd, ks, vs)
            except bpf_sys.BpfErrno:
                self._batch = False  # older kernel or map type without batch ops
        out = []
        for k in bpf_sys.map_keys(self.fd, ks):
            v = bpf_sys.map_lookup(self.fd, k, vs)
            if v is not None:
                out.append((k, v))
        return out

    def items(self) -> list[tuple[Any, Any]]:
        """(key, leaf) pairs; for a per-CPU map each leaf is a list with one per CPU."""
        out = []
        for k, v in self.raw_items():
            key = self.Key.from_buffer_copy(k)
            if self.percpu:
                size = ctypes.sizeof(self.Leaf)
                leaf: Any = [
                    self.Leaf.from_buffer_copy(v[c * self.slot : c * self.slot + size])
                    for c in range(self.ncpu)
                ]
            else:
                leaf = self.Leaf.from_buffer_copy(v)
            out.append((key, leaf))
        return out

    def delete(self, key: Any) -> bool:
        return bpf_sys.map_delete(self.fd, bytes(key))

    def sum(self, index: int) -> int:
        """Value at `index` of an (optionally per-CPU) array of integers, CPUs added up."""
        v = bpf_sys.map_lookup(self.fd, struct.pack("<I", index), self.slot * self.ncpu)
        if v is None:
            return 0
        size = ctypes.sizeof(self.Leaf)
        return sum(
            int(self.Leaf.from_buffer_copy(v[c * self.slot : c * self.slot + size]).value)
            for c in range(self.ncpu)
        )


@dataclass
class Loaded:
    """Maps, programs and tracepoint attachments of one object, all fds of this process."""

    maps: dict[str, Map] = field(default_factory=dict)
    prog_fds: dict[str, int] = field(default_factory=dict)
    perf_fds: list[int] = field(default_factory=list)  # attachments: perf events, tp_btf links

    def close(self) -> None:
        for fd in [*self.perf_fds, *self.prog_fds.values(), *(m.fd for m in self.maps.values())]:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.perf_fds, self.prog_fds, self.maps = [], {}, {}


def tracepoint_id(tracefs: Path, category: str, event: str) -> int:
    p = tracefs / "events" / category / event / "id"
    try:
        return int(p.read_text())
    except OSError as e:
        raise NetdiagError(
            f"tracepoint {category}:{event} not found ({p})", "run `netdiag doctor`"
        ) from e


def load(obj: BpfObject, tracefs: Path, btf_ids: dict[str, int] | None = None) -> Loaded:
    """Create the maps, load the programs and attach each tracepoint program to its event.
    A `raw_tracepoint__EVENT` program is loaded as a BTF-enabled raw tracepoint (tp_btf:
    BPF_PROG_TYPE_TRACING, BPF_TRACE_RAW_TP) at `btf_ids[EVENT]`, the vmlinux BTF id of
    typedef btf_trace_EVENT, and attached with BPF_RAW_TRACEPOINT_OPEN (a link fd)."""
    out = Loaded()
    try:
        fds: list[int] = []
        for m in obj.maps:
            fd = bpf_sys.map_create(
                m.type, m.key_size, m.value_size, m.max_entries, m.flags, m.name
            )
            fds.append(fd)
            out.maps[m.name] = Map(m, fd)
        for p in obj.progs:
            raw = p.raw_tracepoint
            if raw is not None:
                bid = (btf_ids or {}).get(raw)
                if bid is None:  # not given: look it up (parses the kernel's BTF, ~0.2 s)
                    from netdiag.kernel import btf

                    bid = btf.load().find(btf.TYPEDEF, f"btf_trace_{raw}")
                fd = bpf_sys.prog_load(
                    bpf_sys.BPF_PROG_TYPE_TRACING,
                    patch(p, fds),
                    obj.license,
                    obj.kern_version,
                    p.name,
                    expected_attach_type=bpf_sys.BPF_TRACE_RAW_TP,
                    attach_btf_id=bid,
                )
                out.prog_fds[p.name] = fd
                out.perf_fds.append(bpf_sys.raw_tracepoint_open(fd))
                continue
            tp = p.tracepoint
            if tp is None:
                continue  # helpers compiled into the module but not entry points
            code = patch(p, fds)
            fd = bpf_sys.prog_load(
                bpf_sys.BPF_PROG_TYPE_TRACEPOINT, code, obj.license, obj.kern_version, p.name
            )
            out.prog_fds[p.name] = fd
            out.perf_fds.append(bpf_sys.attach_tracepoint(fd, tracepoint_id(tracefs, *tp)))
    except BaseException:
        out.close()
        raise
    return out
