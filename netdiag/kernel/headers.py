"""Find a kernel header tree bcc can compile against.

Order: $BCC_KERNEL_SOURCE, /lib/modules/$(uname -r)/build (+source), the kernel's own
/sys/kernel/kheaders.tar.xz, then any /usr/src/linux-headers-* tree. Debian splits a tree into
an arch directory (generated headers, .config) and a `-common` directory (the rest); bcc needs
both, so we build a private merged tree — a symlink farm in netdiag's cache — and touch nothing
under /lib/modules. netdiag's programs use only stable ABI, so a version mismatch is a warning.
"""

from __future__ import annotations

import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

from netdiag.errors import KernelFeatureError
from netdiag.kernel.host import REAL, HostPaths, cache_dir

FIX = "run `make setup` (installs linux-headers-<arch>) or `netdiag doctor --fix`"


@dataclass(frozen=True)
class HeaderTree:
    path: Path  # what BCC_KERNEL_SOURCE should point at
    version: str  # e.g. "6.1.0-56-amd64"
    origin: str  # "env" | "lib/modules" | "kheaders" | "usr/src (merged)" | "usr/src"
    running: str  # running kernel release

    @property
    def matches(self) -> bool:
        return self.version == self.running

    @property
    def major_minor(self) -> str:
        m = re.match(r"(\d+\.\d+)", self.version)
        return m.group(1) if m else self.version

    def warning(self) -> str | None:
        if self.matches:
            return None
        return (
            f"headers {self.version} differ from running kernel {self.running}; "
            "netdiag's programs use only tracepoint args, uapi structs and helpers, so this is safe"
        )


def _usable(tree: Path) -> bool:
    return (tree / "include/linux").is_dir() or (tree / "include/generated").is_dir()


def _version_of(tree: Path) -> str:
    name = tree.resolve().name
    if name.startswith("linux-headers-"):
        return name.removeprefix("linux-headers-")
    rel = tree / "include/config/kernel.release"
    if rel.exists():
        return rel.read_text().strip()
    return name


def _merge(arch: Path, common: Path, dest: Path) -> None:
    """Symlink farm: `common` overlaid with `arch` (arch wins), directories merged recursively."""
    dest.mkdir(parents=True, exist_ok=True)
    names = {p.name for p in common.iterdir()} | {p.name for p in arch.iterdir()}
    for name in sorted(names):
        a, c, d = arch / name, common / name, dest / name
        if a.is_dir() and not a.is_symlink() and c.is_dir() and not c.is_symlink():
            _merge(a, c, d)
        elif not d.exists() and not d.is_symlink():
            d.symlink_to(a if a.exists() or a.is_symlink() else c)


def merged_tree(arch: Path, common: Path, cache: Path | None = None) -> Path:
    dest = (cache or cache_dir()) / "headers" / arch.name
    marker = dest / ".netdiag-merged"
    if not marker.exists():
        tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
        _merge(arch, common, tmp)
        (tmp / ".netdiag-merged").write_text(f"{arch}\n{common}\n")
        if dest.exists():
            import shutil

            shutil.rmtree(dest)
        tmp.rename(dest)
    return dest


def _common_for(arch: Path) -> Path | None:
    # linux-headers-6.1.0-56-amd64 -> linux-headers-6.1.0-56-common
    m = re.match(r"(linux-headers-\d+\.\d+\.\d+-\d+)-", arch.name)
    if m:
        c = arch.parent / f"{m.group(1)}-common"
        if c.is_dir():
            return c
    return None


def _kheaders(host: HostPaths, cache: Path | None) -> Path | None:
    tar = host.sys / "kernel/kheaders.tar.xz"
    if not tar.exists():
        return None
    dest = (cache or cache_dir()) / "headers" / f"kheaders-{host.release()}"
    if not (dest / "include").is_dir():
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tar) as tf:
            # Debian's 3.11.2 predates extractall(filter=...): refuse unsafe members ourselves
            members = [
                m
                for m in tf.getmembers()
                if not (
                    m.name.startswith("/")
                    or ".." in Path(m.name).parts
                    or m.isdev()
                    or (m.issym() and m.linkname.startswith("/"))
                )
            ]
            tf.extractall(dest, members=members)
    return dest


def candidates(host: HostPaths = REAL) -> list[Path]:
    """Installed /usr/src header trees, newest first (arch directories, not -common)."""
    if not host.usr_src.is_dir():
        return []
    trees = [
        p
        for p in host.usr_src.glob("linux-headers-*")
        if p.is_dir() and not p.name.endswith(("-common", "-common-rt"))
    ]

    def key(p: Path) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", p.name)[:5])

    return sorted(trees, key=key, reverse=True)


def find(host: HostPaths = REAL, cache: Path | None = None) -> HeaderTree:
    running = host.release()
    env = os.environ.get("BCC_KERNEL_SOURCE")
    if env and _usable(Path(env)):
        return HeaderTree(Path(env), _version_of(Path(env)), "env", running)
    build = host.lib_modules / running / "build"
    if build.is_dir() and _usable(build):
        return HeaderTree(build, running, "lib/modules", running)
    try:
        kh = _kheaders(host, cache)
    except (OSError, tarfile.TarError) as e:
        raise KernelFeatureError(
            f"cannot unpack {host.sys}/kernel/kheaders.tar.xz: {e}",
            "set NETDIAG_CACHE to a writable directory",
        ) from e
    if kh is not None:
        return HeaderTree(kh, running, "kheaders", running)
    for arch in candidates(host):
        common = _common_for(arch)
        if common is not None:
            try:
                merged = merged_tree(arch, common, cache)
            except OSError as e:
                raise KernelFeatureError(
                    f"cannot build the merged header tree for {arch.name}: {e}",
                    "set NETDIAG_CACHE to a writable directory",
                ) from e
            return HeaderTree(
                merged, arch.name.removeprefix("linux-headers-"), "usr/src (merged)", running
            )
        if _usable(arch):
            return HeaderTree(arch, arch.name.removeprefix("linux-headers-"), "usr/src", running)
    raise KernelFeatureError(
        f"no kernel headers for bcc (looked in $BCC_KERNEL_SOURCE, {build}, "
        f"{host.sys}/kernel/kheaders.tar.xz, {host.usr_src}/linux-headers-*)",
        FIX,
    )
