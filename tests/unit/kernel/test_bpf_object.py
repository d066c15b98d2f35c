"""The light loader's pure parts: map-fd relocations, bcc type descriptions, the JSON object,
per-CPU value layout, kallsyms lookups and the cache key (no kernel needed)."""

from __future__ import annotations

import ctypes
import struct
from pathlib import Path

import pytest

from netdiag.kernel import bpf_compile, bpf_object, bpf_sys
from netdiag.kernel.bpf_object import BpfObject, MapSpec, ProgSpec
from netdiag.kernel.kallsyms import UNKNOWN, Kallsyms


def _insn(op: int, regs: int, off: int, imm: int) -> bytes:
    return struct.pack("<BBhi", op, regs, off, imm)


def test_map_fds_become_relocations_and_back() -> None:
    # r1 = map fd 7 (ld_imm64 pseudo map fd: two slots), r0 = 0, r1 = map fd 9, exit
    code = b"".join(
        [
            _insn(0x18, 0x11, 0, 7),
            _insn(0, 0, 0, 0),
            _insn(0xB7, 0x00, 0, 0),
            _insn(0x18, 0x11, 0, 9),
            _insn(0, 0, 0, 0),
            _insn(0x95, 0, 0, 0),
        ]
    )
    plain, relocs = bpf_object.unpatch(code, {7: 0, 9: 1})
    assert relocs == ((0, 0), (3, 1))
    assert struct.unpack_from("<i", plain, 4)[0] == 0  # the child's fd does not leak into the cache
    again = bpf_object.patch(ProgSpec("tracepoint__tcp__tcp_probe", plain, relocs), [40, 41])
    assert struct.unpack_from("<i", again, 4)[0] == 40
    assert struct.unpack_from("<i", again, 3 * 8 + 4)[0] == 41
    assert again[8:24] == code[8:24]  # everything else untouched


def test_a_reference_to_an_unknown_fd_is_refused() -> None:
    with pytest.raises(ValueError, match="fd 5"):
        bpf_object.unpatch(_insn(0x18, 0x11, 0, 5) + _insn(0, 0, 0, 0), {7: 0})


def test_bcc_type_descriptions_give_the_same_layout() -> None:
    desc = [
        "peer",
        [
            ["cookie", "unsigned long long"],
            ["state", "unsigned int"],
            ["family", "unsigned short"],
            ["addr", "unsigned char", [16]],
            ["comm", "char", [4]],
            ["hist", "unsigned int", [3]],
        ],
        "struct",
    ]
    T = bpf_object.ctype_of(desc)
    assert ctypes.sizeof(T) == 8 + 4 + 2 + 16 + 4 + 2 + 12  # natural alignment, as in C
    v = T.from_buffer_copy(
        struct.pack("<QIH16s4s2x3I", 42, 1, 10, bytes(range(16)), b"ab\0\0", 1, 2, 3)
    )
    assert v.cookie == 42 and v.family == 10 and bytes(v.addr)[:3] == b"\0\1\2"
    assert v.comm == b"ab" and list(v.hist) == [1, 2, 3]


def test_object_json_round_trip_and_tracepoint_names() -> None:
    m = MapSpec("peers", 1, 8, 16, 128, 0, "unsigned long long", ["v", [["a", "int"]], "struct"])
    p = ProgSpec("tracepoint__sock__inet_sock_set_state", b"\x95" + b"\0" * 7, ((0, 0),))
    obj = BpfObject((m,), (p,), "GPL", 0)
    back = BpfObject.from_json(obj.to_json())
    assert back == obj
    assert back.progs[0].tracepoint == ("sock", "inet_sock_set_state")
    assert ProgSpec("helper", b"", ()).tracepoint is None
    with pytest.raises(ValueError, match="format"):
        BpfObject.from_json({**obj.to_json(), "format": 99})


def test_per_cpu_arrays_add_every_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bpf_sys, "possible_cpus", lambda: 3)
    percpu = bpf_sys.BPF_MAP_TYPE_PERCPU_ARRAY
    spec = MapSpec("stats", percpu, 4, 8, 4, 0, "int", "unsigned long long")
    seen: list[tuple[int, bytes, int]] = []

    def lookup(fd: int, key: bytes, size: int) -> bytes:
        seen.append((fd, key, size))
        return struct.pack("<3Q", 1, 20, 300)

    monkeypatch.setattr(bpf_sys, "map_lookup", lookup)
    m = bpf_object.Map(spec, 5)
    assert m.sum(2) == 321
    assert seen == [(5, struct.pack("<I", 2), 24)]


def test_items_fall_back_to_key_iteration(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = MapSpec("h", 1, 8, 8, 16, 0, "unsigned long long", "unsigned long long")

    def no_batch(*_a: object, **_k: object) -> list[tuple[bytes, bytes]]:
        raise bpf_sys.BpfErrno("BPF batch lookup", 22)

    monkeypatch.setattr(bpf_sys, "map_lookup_batch", no_batch)
    monkeypatch.setattr(bpf_sys, "map_keys", lambda fd, ks: [struct.pack("<Q", 1)])
    monkeypatch.setattr(bpf_sys, "map_lookup", lambda fd, k, n: struct.pack("<Q", 99))
    m = bpf_object.Map(spec, 3)
    [(k, v)] = m.items()
    assert k.value == 1 and v.value == 99
    assert not m._batch  # remembered: no second failing batch call each interval


def test_kallsyms_names_the_enclosing_function(tmp_path: Path) -> None:
    f = tmp_path / "kallsyms"
    f.write_text(
        "ffffffff81000000 T _text\n"
        "ffffffff81001000 t tcp_v4_rcv\n"
        "ffffffff81002000 d some_data\n"
        "ffffffff81003000 T kfree_skb_reason\n"
    )
    k = Kallsyms(f)
    assert k.name(0xFFFFFFFF81001010) == "tcp_v4_rcv"
    assert k.name(0xFFFFFFFF81003000) == "kfree_skb_reason"
    assert k.name(0x10) == UNKNOWN and k.name(0) == UNKNOWN


def test_cache_key_follows_source_defines_and_headers(tmp_path: Path) -> None:
    src = tmp_path / "p.bpf.c"
    src.write_text("int x;")
    tree = Path("/usr/src/h")
    a = bpf_compile.cache_key(src, {"FILTER_PORT": 1}, tree)
    assert a == bpf_compile.cache_key(src, {"FILTER_PORT": 1}, tree)
    assert a != bpf_compile.cache_key(src, {"FILTER_PORT": 2}, tree)
    assert a != bpf_compile.cache_key(src, {"FILTER_PORT": 1}, Path("/other"))
    src.write_text("int y;")
    assert a != bpf_compile.cache_key(src, {"FILTER_PORT": 1}, tree)


def test_cache_keeps_the_newest_entries(tmp_path: Path) -> None:
    import os

    for i in range(5):
        p = tmp_path / f"p-{i}.json"
        p.write_text("{}")
        os.utime(p, (1000 + i, 1000 + i))
    bpf_compile.prune(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.glob("*.json")) == ["p-3.json", "p-4.json"]


def test_cache_entries_are_named_after_the_program(tmp_path: Path) -> None:
    from netdiag.kernel.bcc_loader import LoadEnv

    src = tmp_path / "tcp_peers.bpf.c"
    src.write_text("int x;")
    e = bpf_compile.entry(src, {}, LoadEnv(cache=tmp_path), Path("/h"))
    assert e.parent == tmp_path / "bpf" and e.name.startswith("tcp_peers-")


def test_raw_tracepoint_programs_are_told_apart_from_tracepoints() -> None:
    from netdiag.kernel.bpf_object import ProgSpec

    raw = ProgSpec("raw_tracepoint__tcp_probe", b"", ())
    assert raw.raw_tracepoint == "tcp_probe" and raw.tracepoint is None
    tp = ProgSpec("tracepoint__tcp__tcp_probe", b"", ())
    assert tp.raw_tracepoint is None and tp.tracepoint == ("tcp", "tcp_probe")
