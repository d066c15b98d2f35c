"""What every link engine offers the lab."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from netdiag.lab.topology import LinkShape


@dataclass(frozen=True)
class LinkEnds:
    """One link's two ends: namespace and interface name on each side, plus its files."""

    ns_a: str
    dev_a: str
    ns_b: str
    dev_b: str
    work: Path  # directory for the link's control FIFO / stats
    tag: str  # short unique tag of the link within the lab, e.g. "l3"
    mtu: int
    seed: int


def direction_params(shape: LinkShape, mtu: int) -> tuple[int, int, int, int, int]:
    """(one-way delay ns, jitter ns, rate bit/s, loss ppb, queue packets) for each direction."""
    return (
        round(shape.delay_s / 2 * 1e9),
        round(shape.jitter_s * 1e9),
        shape.rate_bps,
        round(shape.loss * 1e9),
        shape.queue_packets(mtu),
    )


class LinkEngine(Protocol):
    name: str

    def create(
        self, ends: LinkEnds, shape: LinkShape
    ) -> tuple[subprocess.Popen[bytes] | None, dict[str, Any]]:
        """Make the link; returns the process that carries it (if any) and its state record."""
        ...

    def set(self, record: dict[str, Any], shape: LinkShape, mtu: int) -> None:
        """Change a live link's shape; works from the state record alone (any process)."""
        ...

    def stats(self, record: dict[str, Any]) -> dict[str, Any]:
        """Per-direction counters ({"ab": {...}, "ba": {...}}), or {} if unknown."""
        ...
