"""The running kernel's BTF (/sys/kernel/btf/vmlinux), read in Python: type ids and the byte
offsets of struct members, for BTF-enabled hooks (tp_btf) whose programs read kernel structs.

The format (include/uapi/linux/btf.h) is a header, a type section and a string section. Each
type is `struct btf_type` (name_off, info, size|type) followed by kind-specific data; type ids
count from 1 in section order. Only what offsets need is kept: names, kinds, sizes, members.
Anonymous struct/union members are searched through, as C does (`sk.__sk_common.skc_family`).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

VMLINUX = Path("/sys/kernel/btf/vmlinux")
MAGIC = 0xEB9F

INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF = 1, 2, 3, 4, 5, 6, 7, 8
VOLATILE, CONST, RESTRICT, FUNC, FUNC_PROTO, VAR, DATASEC = 9, 10, 11, 12, 13, 14, 15
FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = 16, 17, 18, 19
_MODIFIERS = {TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG}

# bytes after struct btf_type: fixed, plus per vlen entry
_EXTRA = {INT: 4, ARRAY: 12, VAR: 4, DECL_TAG: 4}
_PER_VLEN = {STRUCT: 12, UNION: 12, ENUM: 8, FUNC_PROTO: 8, DATASEC: 12, ENUM64: 12}


class BtfError(ValueError):
    """Not BTF, or a type or member the kernel does not have."""


@dataclass(frozen=True)
class Member:
    name: str
    type_id: int
    bit_offset: int
    bitfield_size: int  # 0: not a bit field


@dataclass(frozen=True)
class Type:
    kind: int
    name: str
    size_or_type: int  # size (INT, STRUCT, UNION, ENUM...) or referenced type id
    members: tuple[Member, ...] = ()


@dataclass(frozen=True)
class Field:
    """Where a member lives in its outer struct: byte offset and size, bit field position."""

    offset: int
    size: int
    bit_offset: int = 0  # within the byte at `offset` (bit fields only)
    bit_size: int = 0  # 0: not a bit field


class Btf:
    def __init__(self, types: list[Type]) -> None:
        self.types = types  # index = type id; 0 is void
        self._by_name: dict[tuple[int, str], int] = {}
        for i, t in enumerate(types):
            if t.name:
                self._by_name.setdefault((t.kind, t.name), i)

    @classmethod
    def parse(cls, data: bytes) -> Btf:
        if len(data) < 24:
            raise BtfError("BTF blob shorter than its header")
        magic, _version, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
        if magic != MAGIC:
            raise BtfError(f"not little-endian BTF (magic {magic:#x})")
        type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", data, 8)
        tstart, sstart = hdr_len + type_off, hdr_len + str_off
        if tstart + type_len > len(data) or sstart + str_len > len(data):
            raise BtfError("BTF sections run past the end of the blob")
        strings = data[sstart : sstart + str_len]

        def name(off: int) -> str:
            end = strings.find(b"\0", off)
            return strings[off : end if end >= 0 else len(strings)].decode(errors="replace")

        types: list[Type] = [Type(0, "", 0)]
        pos, end = tstart, tstart + type_len
        unpack = struct.unpack_from
        while pos < end:
            name_off, info, st = unpack("<III", data, pos)
            pos += 12
            kind, vlen, kflag = (info >> 24) & 0x1F, info & 0xFFFF, info >> 31
            members: tuple[Member, ...] = ()
            if kind in (STRUCT, UNION):
                ms = []
                for j in range(vlen):
                    mn, mt, mo = unpack("<III", data, pos + 12 * j)
                    bits, bsize = (mo & 0xFFFFFF, mo >> 24) if kflag else (mo, 0)
                    ms.append(Member(name(mn), mt, bits, bsize))
                members = tuple(ms)
            elif kind == 0 or kind > ENUM64:
                raise BtfError(f"unknown BTF kind {kind} (type {len(types)})")
            pos += _EXTRA.get(kind, 0) + _PER_VLEN.get(kind, 0) * vlen
            # names of the types offsets are asked for; other kinds keep theirs too (cheap)
            types.append(Type(kind, name(name_off) if name_off else "", st, members))
        if pos != end:
            raise BtfError("BTF type section does not end on a type boundary")
        return cls(types)

    def find(self, kind: int, name: str) -> int:
        i = self._by_name.get((kind, name))
        if i is None:
            raise BtfError(f"no BTF type {name!r} (kind {kind}) in this kernel")
        return i

    def resolve(self, type_id: int) -> int:
        """Skip typedefs and qualifiers."""
        for _ in range(64):
            t = self.types[type_id]
            if t.kind not in _MODIFIERS:
                return type_id
            type_id = t.size_or_type
        raise BtfError(f"BTF type {type_id}: modifier chain too long")

    def size(self, type_id: int) -> int:
        t = self.types[self.resolve(type_id)]
        if t.kind in (INT, STRUCT, UNION, ENUM, ENUM64, FLOAT, DATASEC):
            return t.size_or_type
        if t.kind == PTR:
            return 8
        raise BtfError(f"BTF type {t.name or type_id} (kind {t.kind}) has no size here")

    def _member(self, type_id: int, name: str) -> tuple[Member, int] | None:
        """`name` in a struct/union, searching anonymous members; (member, outer bit offset)."""
        t = self.types[self.resolve(type_id)]
        for m in t.members:
            if m.name == name:
                return m, 0
        for m in t.members:
            if not m.name and self.types[self.resolve(m.type_id)].kind in (STRUCT, UNION):
                got = self._member(m.type_id, name)
                if got is not None:
                    return got[0], got[1] + m.bit_offset
        return None

    def field(self, struct_name: str, path: str) -> Field:
        """Offset of `a.b.c` inside struct `struct_name` (anonymous members looked through)."""
        tid = self.find(STRUCT, struct_name)
        bits, m = 0, None
        for part in path.split("."):
            got = self._member(tid, part)
            if got is None:
                raise BtfError(f"struct {struct_name} has no member {path!r} ({part!r})")
            m, outer = got
            bits += outer + m.bit_offset
            tid = m.type_id
        assert m is not None
        if m.bitfield_size:
            return Field(bits // 8, 1, bits % 8, m.bitfield_size)
        if bits % 8:
            raise BtfError(f"{struct_name}.{path} is not byte-aligned")
        return Field(bits // 8, self.size(tid))


def digest(path: Path = VMLINUX) -> str:
    """A short hash of the kernel's BTF: offsets cached under it stay right for this kernel."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def load(path: Path = VMLINUX) -> Btf:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise BtfError(f"cannot read {path}: {e.strerror}") from e
    return Btf.parse(data)
