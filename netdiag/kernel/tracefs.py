"""tracefs: find it, mount it when missing (bcc reads tracepoint ids and formats from it)."""

from __future__ import annotations

from pathlib import Path

from netdiag.kernel.host import REAL, HostPaths, mount_pseudo, mounts

DEFAULT = Path("/sys/kernel/tracing")


def mountpoint(host: HostPaths = REAL) -> Path | None:
    for _src, target, fstype, _opts in mounts(host):
        if fstype == "tracefs":
            return Path(target)
    return None


def ensure(host: HostPaths = REAL) -> Path:
    """Return the tracefs mount, mounting it at /sys/kernel/tracing if needed."""
    found = mountpoint(host)
    if found is not None:
        return found
    mount_pseudo("tracefs", DEFAULT)
    return DEFAULT


def tracepoint_exists(category: str, event: str, host: HostPaths = REAL) -> bool:
    mp = mountpoint(host)
    return mp is not None and (mp / "events" / category / event / "id").exists()


def tracepoint_format(category: str, event: str, host: HostPaths = REAL) -> str | None:
    mp = mountpoint(host)
    if mp is None:
        return None
    try:
        return (mp / "events" / category / event / "format").read_text()
    except OSError:
        return None


def format_fields(fmt: str) -> set[str]:
    """Argument names declared in a tracefs `format` file (common_* excluded)."""
    out = set()
    for line in fmt.splitlines():
        line = line.strip()
        if line.startswith("field:"):
            decl = line.split(";", 1)[0].removeprefix("field:").strip()
            name = decl.split()[-1].split("[", 1)[0].lstrip("*")
            if not name.startswith("common_"):
                out.add(name)
    return out
