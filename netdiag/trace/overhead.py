"""Per-event cost and CPU share of attached programs, measured by the kernel (bpf_stats).

Run-time stats are on only in a short window before each read (`open_window()` then
`sample()`; the pipeline calls both, see Pipeline.pre_read and post_wait: sample() as the
wait ends, before the read and the stages): while they are on, every BPF
program run on the host — ours and anyone else's — pays two clock reads (sched_clock), which
in a VM cost about as much as the rest of tcp_peers' per-ACK work (docs/benchmarks.md,
probes). So the figures are those of the window (`bpf_stats_window_s`, by default the last
0.1 s of each interval, at most a tenth of it); a driver that never opens a window (the
exporter) never turns them on.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from netdiag.trace import bpfstats
from netdiag.trace.engine import Session


class Overhead:
    def __init__(
        self,
        sessions: list[Session],
        clock: Callable[[], float] = time.monotonic,
        enable: Callable[[], int | None] = bpfstats.enable,
        disable: Callable[[int | None], None] = bpfstats.disable,
    ) -> None:
        self.sessions = sessions
        self.clock, self._enable, self._disable = clock, enable, disable
        self.fd: int | None = None
        self.refused = False  # BPF_ENABLE_STATS failed once: not retried every interval
        self.prev: bpfstats.ProgStats | None = None
        self.t = 0.0

    def _total(self) -> bpfstats.ProgStats:
        fds = {f"{s.probe.name}/{n}": fd for s in self.sessions for n, fd in s.prog_fds().items()}
        return bpfstats.total(bpfstats.read(fds))

    def open_window(self) -> None:
        """Run-time stats on from now until the next sample().

        Each window turns the kernel's bpf_stats_enabled static key on here and off in
        sample() (unless someone else holds it on): two live code patches, each with IPIs to
        every CPU, per interval — cheap at one read a second, but not free."""
        if self.fd is None and not self.refused:
            self.fd = self._enable()
            self.refused = self.fd is None
        if self.fd is not None:
            self.prev, self.t = self._total(), self.clock()

    def sample(self) -> dict[str, float | None] | None:
        """The window's figures (None without one); stats go off again."""
        if self.fd is None or self.prev is None:
            return None
        cur, now = self._total(), self.clock()
        self._disable(self.fd)
        self.fd = None
        d_ns, d_cnt, dt = (
            cur.run_time_ns - self.prev.run_time_ns,
            cur.run_cnt - self.prev.run_cnt,
            now - self.t,
        )
        self.prev = None
        if dt <= 0:
            return None
        return {
            "bpf_runs": d_cnt,
            "bpf_runs_per_s": round(d_cnt / dt, 1),
            # no run in the window (it is short: the first one can be a few ms): no figure
            "bpf_ns_per_event": round(d_ns / d_cnt, 1) if d_cnt else None,
            "bpf_cpu_pct": round(d_ns / (dt * 1e9) * 100, 4),
            "bpf_stats_window_s": round(dt, 4),
        }

    def close(self) -> None:
        self._disable(self.fd)
        self.fd = None


def text(o: dict[str, float | None] | None) -> str | None:
    if not o:
        return None
    ns = o.get("bpf_ns_per_event")
    if ns is None:
        return "probe cost: no run in the stats window"
    # runs count every event on the host (filters are applied after the kernel half runs)
    return (
        f"probe cost {o['bpf_runs_per_s']:,.0f} runs/s × {ns:.0f} ns "
        f"= {o['bpf_cpu_pct']:.3f}% of one CPU"
    )
