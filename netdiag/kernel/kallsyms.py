"""Kernel address -> function name from /proc/kallsyms, without bcc (what `BPF.ksym` does).

Read once on first use (the text symbols only, ~2 MB of text parsed into two sorted lists).
"""

from __future__ import annotations

import bisect
from pathlib import Path

UNKNOWN = "[unknown]"


class Kallsyms:
    def __init__(self, path: Path = Path("/proc/kallsyms")) -> None:
        self.path = path
        self._addrs: list[int] | None = None
        self._names: list[str] = []

    def _load(self) -> list[int]:
        pairs = []
        try:
            with self.path.open() as f:
                for line in f:
                    parts = line.split(None, 3)
                    if len(parts) >= 3 and parts[1] in "tTwW":
                        addr = int(parts[0], 16)
                        if addr:  # all zero when kptr_restrict hides addresses
                            pairs.append((addr, parts[2]))
        except OSError:
            pass
        pairs.sort()
        self._names = [n for _a, n in pairs]
        self._addrs = [a for a, _n in pairs]
        return self._addrs

    def name(self, addr: int) -> str:
        addrs = self._addrs if self._addrs is not None else self._load()
        i = bisect.bisect_right(addrs, addr) - 1
        return self._names[i] if i >= 0 and addr else UNKNOWN
