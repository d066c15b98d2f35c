"""Compile the userspace link forwarder (ndlink.c, shipped as source) once per source hash."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from importlib import resources
from pathlib import Path

from netdiag.errors import KernelFeatureError, NetdiagError
from netdiag.kernel.host import cache_dir

CFLAGS = ["-O2", "-Wall", "-pthread"]


def source_text() -> str:
    return resources.files("netdiag.lab").joinpath("ndlink.c").read_text()


def forwarder(cache: Path | None = None) -> Path:
    """Path of the compiled forwarder; builds it with gcc on first use (~0.3 s)."""
    src = source_text()
    digest = hashlib.sha256((src + " ".join(CFLAGS)).encode()).hexdigest()[:16]
    out_dir = (cache or cache_dir()) / "lab"
    exe = out_dir / f"ndlink-{digest}"
    if exe.exists():
        return exe
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise KernelFeatureError(
            "the userspace link engine needs a C compiler to build its forwarder",
            "install gcc (`make setup` does) or use --engine kernel on a host with netem",
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    src_path = out_dir / f"ndlink-{digest}.c"
    src_path.write_text(src)
    tmp = out_dir / f".ndlink-{digest}.{os.getpid()}"
    r = subprocess.run([cc, *CFLAGS, "-o", str(tmp), str(src_path)], capture_output=True, text=True)
    if r.returncode != 0:
        raise NetdiagError(
            f"building the link forwarder failed:\n{r.stderr.strip()}", "report this as a bug"
        )
    tmp.rename(exe)  # atomic: parallel builders never see a half-written binary
    return exe
