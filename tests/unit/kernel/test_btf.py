"""The BTF reader on a blob built here: header, types (with the kinds vmlinux has around the
ones we read), strings; member offsets through nested and anonymous members; bit fields."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from netdiag.kernel import btf


class Blob:
    """A tiny BTF writer: add types in id order, then bytes()."""

    def __init__(self) -> None:
        self.strings = bytearray(b"\0")
        self.types = bytearray()
        self.next_id = 1

    def s(self, name: str) -> int:
        if not name:
            return 0
        off = len(self.strings)
        self.strings += name.encode() + b"\0"
        return off

    def add(self, kind: int, name: str, vlen: int, st: int, extra: bytes, kflag: int = 0) -> int:
        info = (kflag << 31) | (kind << 24) | vlen
        self.types += struct.pack("<III", self.s(name), info, st) + extra
        self.next_id += 1
        return self.next_id - 1

    def int_(self, name: str, size: int) -> int:
        return self.add(btf.INT, name, 0, size, struct.pack("<I", size * 8))

    def struct_(
        self, name: str, size: int, members: list[tuple[str, int, int, int]], union: bool = False
    ) -> int:
        """members: (name, type id, bit offset, bitfield size)."""
        kflag = int(any(m[3] for m in members))
        extra = b"".join(
            struct.pack("<III", self.s(n), t, (bs << 24 | bo) if kflag else bo)
            for n, t, bo, bs in members
        )
        kind = btf.UNION if union else btf.STRUCT
        return self.add(kind, name, len(members), size, extra, kflag)

    def bytes(self) -> bytes:
        hdr = struct.pack(
            "<HBBIIIII", btf.MAGIC, 1, 0, 24, 0, len(self.types), len(self.types), len(self.strings)
        )
        return hdr + bytes(self.types) + bytes(self.strings)


def sample() -> bytes:
    b = Blob()
    u8, u16, u32, u64 = b.int_("u8", 1), b.int_("u16", 2), b.int_("u32", 4), b.int_("u64", 8)
    td = b.add(btf.TYPEDEF, "__be16", 0, u16, b"")
    b.add(btf.ENUM, "e", 2, 4, struct.pack("<iiii", b.s("A"), 0, b.s("B"), 1))
    b.add(btf.FUNC_PROTO, "", 1, 0, struct.pack("<II", 0, u32))
    b.add(btf.ARRAY, "", 0, 0, struct.pack("<III", u8, u32, 16))
    pair = b.struct_("", 4, [("skc_dport", td, 0, 0), ("skc_num", u16, 16, 0)])
    port_u = b.struct_("", 4, [("skc_portpair", u32, 0, 0), ("", pair, 0, 0)], union=True)
    common = b.struct_("sock_common", 24, [("", port_u, 0, 0), ("skc_cookie", u64, 64, 0)])
    sock = b.struct_("sock", 32, [("__sk_common", common, 0, 0), ("sk_mark", u32, 192, 0)])
    b.add(btf.CONST, "", 0, sock, b"")
    tcp = b.struct_(
        "tcp_sock",
        48,
        [
            ("sk", sock, 0, 0),
            ("ca_state", u8, 256, 5),
            ("ca_init", u8, 261, 1),
            ("srtt_us", u32, 320, 0),
        ],
    )
    b.add(btf.FUNC_PROTO, "", 2, 0, struct.pack("<IIII", 0, tcp, 0, u64))
    b.add(btf.TYPEDEF, "btf_trace_tcp_probe", 0, b.next_id - 1, b"")
    b.add(btf.DECL_TAG, "tag", 0, tcp, struct.pack("<i", -1))
    b.add(btf.ENUM64, "e64", 1, 8, struct.pack("<III", b.s("C"), 1, 0))
    return b.bytes()


def test_offsets_through_nested_and_anonymous_members() -> None:
    b = btf.Btf.parse(sample())
    assert b.field("tcp_sock", "srtt_us") == btf.Field(40, 4)
    assert b.field("tcp_sock", "sk.__sk_common.skc_cookie") == btf.Field(8, 8)
    # skc_dport sits in an anonymous struct in an anonymous union; its type is a typedef
    assert b.field("sock", "__sk_common.skc_dport") == btf.Field(0, 2)
    assert b.field("sock", "__sk_common.skc_num") == btf.Field(2, 2)
    assert b.field("sock", "sk_mark") == btf.Field(24, 4)


def test_bit_fields_give_byte_shift_and_width() -> None:
    b = btf.Btf.parse(sample())
    assert b.field("tcp_sock", "ca_state") == btf.Field(32, 1, 0, 5)
    assert b.field("tcp_sock", "ca_init") == btf.Field(32, 1, 5, 1)


def test_type_ids_count_from_one_in_section_order() -> None:
    b = btf.Btf.parse(sample())
    tid = b.find(btf.TYPEDEF, "btf_trace_tcp_probe")
    assert b.types[tid].name == "btf_trace_tcp_probe"
    assert b.types[b.find(btf.STRUCT, "tcp_sock")].size_or_type == 48
    assert b.find(btf.INT, "u8") == 1


def test_missing_types_and_members_are_named() -> None:
    b = btf.Btf.parse(sample())
    with pytest.raises(btf.BtfError, match="no BTF type 'udp_sock'"):
        b.field("udp_sock", "x")
    with pytest.raises(btf.BtfError, match="no member 'snd_cwnd'"):
        b.field("tcp_sock", "snd_cwnd")
    with pytest.raises(btf.BtfError, match="'nope'"):
        b.field("tcp_sock", "sk.nope")


def test_bad_blobs_are_refused() -> None:
    good = sample()
    with pytest.raises(btf.BtfError, match="magic"):
        btf.Btf.parse(b"\0\0" + good[2:])
    with pytest.raises(btf.BtfError, match="past the end"):
        btf.Btf.parse(good[:-4])
    with pytest.raises(btf.BtfError, match="shorter"):
        btf.Btf.parse(good[:10])
    # a type section cut inside a type
    hdr = bytearray(good[:24])
    type_len = struct.unpack_from("<I", hdr, 12)[0]
    struct.pack_into("<I", hdr, 12, type_len - 4)
    struct.pack_into("<I", hdr, 16, type_len - 4)
    body = good[24 : 24 + type_len - 4] + good[24 + type_len :]
    with pytest.raises(btf.BtfError):
        btf.Btf.parse(bytes(hdr) + body)


def test_load_and_digest_from_a_file(tmp_path: Path) -> None:
    p = tmp_path / "vmlinux"
    p.write_bytes(sample())
    assert btf.load(p).field("tcp_sock", "srtt_us").offset == 40
    d = btf.digest(p)
    p.write_bytes(sample() + b"x")
    assert btf.digest(p) != d
    with pytest.raises(btf.BtfError, match="cannot read"):
        btf.load(tmp_path / "absent")
