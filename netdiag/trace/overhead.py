"""Per-event cost and CPU share of attached programs, measured by the kernel (bpf_stats)."""

from __future__ import annotations

import time

from netdiag.trace import bpfstats
from netdiag.trace.engine import Session


class Overhead:
    def __init__(self, sessions: list[Session]) -> None:
        self.sessions = sessions
        self.fd = bpfstats.enable()
        self.prev = self._total()
        self.t = time.monotonic()

    def _total(self) -> bpfstats.ProgStats:
        fds = {f"{s.probe.name}/{n}": fd for s in self.sessions for n, fd in s.prog_fds().items()}
        return bpfstats.total(bpfstats.read(fds))

    def sample(self) -> dict[str, float] | None:
        if self.fd is None:
            return None
        cur, now = self._total(), time.monotonic()
        d_ns, d_cnt, dt = (
            cur.run_time_ns - self.prev.run_time_ns,
            cur.run_cnt - self.prev.run_cnt,
            now - self.t,
        )
        self.prev, self.t = cur, now
        if dt <= 0:
            return None
        return {
            "bpf_runs": d_cnt,
            "bpf_runs_per_s": round(d_cnt / dt, 1),
            "bpf_ns_per_event": round(d_ns / d_cnt, 1) if d_cnt else 0.0,
            "bpf_cpu_pct": round(d_ns / (dt * 1e9) * 100, 4),
        }

    def close(self) -> None:
        bpfstats.disable(self.fd)
        self.fd = None


def text(o: dict[str, float] | None) -> str | None:
    if not o:
        return None
    # runs count every event on the host (filters are applied after the kernel half runs)
    return (
        f"probe cost {o['bpf_runs_per_s']:,.0f} runs/s × {o['bpf_ns_per_event']:.0f} ns "
        f"= {o['bpf_cpu_pct']:.3f}% of one CPU"
    )
