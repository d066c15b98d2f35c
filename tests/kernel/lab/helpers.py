from __future__ import annotations

import os

from netdiag.kernel import netns


def leftovers(lab: str) -> list[str]:
    """Namespaces of this lab that still exist."""
    return [n for n in netns.list_names() if n.startswith(f"nd-{lab}-")]


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def tun_devices_anywhere(names: list[str]) -> list[str]:
    """Interfaces named like lab links in the root namespace (there must never be any)."""
    return [d for d in os.listdir("/sys/class/net") if d in names]
