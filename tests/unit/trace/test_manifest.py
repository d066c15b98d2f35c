"""The manifests are the single source of truth: they must agree with the kernel halves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from netdiag.errors import InputError
from netdiag.kernel import tracefs
from netdiag.kernel.bcc_loader import BPF_DIR
from netdiag.kernel.host import HostPaths
from netdiag.trace import manifest

NAMES = manifest.names()


def test_catalog_has_the_three_probes() -> None:
    assert {"tcp_peers", "tcp_cong", "tcp_drops"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_hook_args_match_what_the_program_reads(name: str) -> None:
    p = manifest.load(name)
    src = (BPF_DIR / f"{p.source}.bpf.c").read_text()
    used = set(re.findall(r"args->(\w+)", src))
    declared = {a for h in p.hooks for a in (*h.args, *h.optional)}
    assert used <= declared, f"program reads args the manifest does not declare: {used - declared}"
    probes_in_src = set(re.findall(r"TRACEPOINT_PROBE\((\w+),\s*(\w+)\)", src))
    assert probes_in_src == {(h.category, h.event) for h in p.hooks}


@pytest.mark.parametrize("name", NAMES)
def test_fields_name_real_struct_members_and_columns_exist(name: str) -> None:
    p = manifest.load(name)
    src = (BPF_DIR / f"{p.source}.bpf.c").read_text()
    for f in p.fields:
        member = f.c.split(".")[-1]
        assert re.search(rf"\b{member}\b(\[\w+\])?;", src), (
            f"{f.c} is not a struct member in {p.source}"
        )
        assert f.unit is not None and f.doc, f"field {f.name} needs a unit and a doc"
    names = {f.name for f in p.fields} | {f.rate for f in p.fields if f.rate} | {"peer", "age_s"}
    names |= {
        f"{f.name.removesuffix('_hist')}_{q}_{f.unit}"
        for f in p.fields
        if f.type == "log2_hist"
        for q in ("p50", "p90", "p99")
    }
    for col in p.output.default_columns:
        assert col.split(".")[0] in names, f"default column {col} is no field"
    assert p.output.map in src and p.output.stats_map in src


@pytest.mark.parametrize("name", NAMES)
def test_stats_slots_match_the_program(name: str) -> None:
    p = manifest.load(name)
    src = (BPF_DIR / f"{p.source}.bpf.c").read_text()
    slots = int(re.search(r"#define S_SLOTS (\d+)", src).group(1))  # type: ignore[union-attr]
    assert len(p.output.stats) == slots


def test_unknown_probe_and_bad_field_type(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no probe"):
        manifest.load("nope", tmp_path)
    (tmp_path / "x.toml").write_text(
        '[probe]\nname="x"\n[[hooks]]\ntracepoint="tcp:tcp_probe"\n'
        '[[fields]]\nname="a"\nc="a"\ntype="float"\n[output]\nmap="m"\n'
    )
    with pytest.raises(InputError, match="unknown type"):
        manifest.load("x", tmp_path)


def _fake_tracefs(root: Path, formats: dict[str, str]) -> HostPaths:
    (root / "proc/self").mkdir(parents=True)
    tfs = root / "tracing"
    (root / "proc/self/mounts").write_text(f"tracefs {tfs} tracefs rw 0 0\n")
    for tp, fmt in formats.items():
        cat, ev = tp.split(":")
        d = tfs / "events" / cat / ev
        d.mkdir(parents=True)
        (d / "id").write_text("1\n")
        (d / "format").write_text(fmt)
    return HostPaths(proc=root / "proc", sys=root / "sys")


FMT_RETRANS = """name: tcp_retransmit_skb
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:const void * skaddr;\toffset:16;\tsize:8;\tsigned:0;
\tfield:__u16 sport;\toffset:28;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:30;\tsize:2;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:34;\tsize:4;\tsigned:0;
"""


def test_format_fields_parses_arrays_and_pointers() -> None:
    assert tracefs.format_fields(FMT_RETRANS) == {"skaddr", "sport", "dport", "saddr"}


def test_availability_names_missing_tracepoints_and_args(tmp_path: Path) -> None:
    host = _fake_tracefs(
        tmp_path, {"tcp:tcp_retransmit_skb": FMT_RETRANS.replace("dport", "xport")}
    )
    a = manifest.availability(manifest.load("tcp_peers"), host)
    assert not a.ok
    assert "tracepoint tcp:tcp_probe" in a.missing
    assert "arg tcp:tcp_retransmit_skb.dport" in a.missing
    assert "tracepoint sock:inet_sock_set_state" in a.missing


def test_availability_without_tracefs(tmp_path: Path) -> None:
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/mounts").write_text("proc /proc proc rw 0 0\n")
    a = manifest.availability(manifest.load("tcp_drops"), HostPaths(proc=tmp_path / "proc"))
    assert not a.ok and "tracefs" in a.missing[0]
