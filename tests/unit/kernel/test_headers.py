from __future__ import annotations

import os
from pathlib import Path

import pytest

from netdiag.errors import KernelFeatureError
from netdiag.kernel import headers
from tests.unit.kernel import fakehost


@pytest.fixture(autouse=True)
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BCC_KERNEL_SOURCE", raising=False)


def test_debian_split_tree_is_merged_arch_over_common(tmp_path: Path) -> None:
    host = fakehost.make(tmp_path)
    arch, common = fakehost.debian_headers(host)
    tree = headers.find(host, cache=tmp_path / "cache")
    assert tree.origin == "usr/src (merged)"
    assert tree.version == "6.1.0-56-amd64"
    assert not tree.matches
    assert "differ" in (tree.warning() or "")
    # both halves are reachable through the merged tree, arch winning where both have a dir
    assert (tree.path / "include/linux/bpf.h").read_text() == "/* common */\n"
    assert (tree.path / "include/generated/autoconf.h").read_text() == "/* arch */\n"
    assert (tree.path / "include/generated/common_only.h").exists()
    assert (tree.path / "arch/x86/include/asm/ptrace.h").exists()
    assert (tree.path / "arch/x86/include/generated").is_dir()
    assert (tree.path / ".config").read_text() == "CONFIG_BPF=y\n"
    # nothing was written into /usr/src or /lib/modules
    assert sorted(p.name for p in host.usr_src.iterdir()) == sorted([arch.name, common.name])
    assert list(host.lib_modules.iterdir()) == []


def test_merged_tree_is_reused(tmp_path: Path) -> None:
    host = fakehost.make(tmp_path)
    fakehost.debian_headers(host)
    a = headers.find(host, cache=tmp_path / "cache")
    marker = a.path / ".netdiag-merged"
    mtime = marker.stat().st_mtime_ns
    b = headers.find(host, cache=tmp_path / "cache")
    assert a.path == b.path and marker.stat().st_mtime_ns == mtime


def test_running_kernel_build_dir_wins(tmp_path: Path) -> None:
    host = fakehost.make(tmp_path, release="6.1.0-56-amd64")
    fakehost.debian_headers(host)
    build = host.lib_modules / "6.1.0-56-amd64/build"
    (build / "include/linux").mkdir(parents=True)
    tree = headers.find(host, cache=tmp_path / "cache")
    assert tree.origin == "lib/modules" and tree.path == build and tree.matches
    assert tree.warning() is None


def test_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host = fakehost.make(tmp_path)
    mine = tmp_path / "mine"
    (mine / "include/linux").mkdir(parents=True)
    monkeypatch.setenv("BCC_KERNEL_SOURCE", str(mine))
    assert headers.find(host, cache=tmp_path / "c").origin == "env"


def test_newest_tree_chosen(tmp_path: Path) -> None:
    host = fakehost.make(tmp_path)
    fakehost.debian_headers(host, "6.1.0-9")
    fakehost.debian_headers(host, "6.1.0-56")
    assert headers.find(host, cache=tmp_path / "c").version == "6.1.0-56-amd64"


def test_nothing_found_says_how_to_fix(tmp_path: Path) -> None:
    host = fakehost.make(tmp_path)
    with pytest.raises(KernelFeatureError) as ei:
        headers.find(host, cache=tmp_path / "c")
    assert "make setup" in (ei.value.fix or "")
    assert str(host.usr_src) in ei.value.what


def test_kheaders_archive_is_extracted(tmp_path: Path) -> None:
    import tarfile

    host = fakehost.make(tmp_path)
    src = tmp_path / "kh"
    (src / "include/linux").mkdir(parents=True)
    (src / "include/linux/x.h").write_text("x")
    with tarfile.open(host.sys / "kernel/kheaders.tar.xz", "w:xz") as tf:
        tf.add(src / "include", arcname="include")
    tree = headers.find(host, cache=tmp_path / "c")
    assert tree.origin == "kheaders" and (tree.path / "include/linux/x.h").read_text() == "x"
    assert os.path.commonpath([tree.path, tmp_path / "c"]) == str(tmp_path / "c")
