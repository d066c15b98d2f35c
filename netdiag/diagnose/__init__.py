"""The verdict engine: windows of tcp_info/bbr_info/skmem (+ listener queues and counters) ->
findings (verdict, severity, confidence, evidence, fix). No CLI code here.

Public API (what `bdp`, `trace-peers`, `diagnose`, the exporter and the benchmarks call):

- ``Sample(t_s, conn)`` one sock_diag observation; ``build_window(samples)`` -> ``ConnWindow``
- ``judge(window, Context(...))`` -> ``Finding`` for one connection
- ``judge_samples(samples, rate_bps=None)`` the two above in one call
- ``run(Selection(...), window_s, rate_bps=…, node_url=…)`` -> ``Report`` (collect + judge all)
- ``VERDICTS``, ``REAL_LIMITS``, ``Finding.to_json()``
"""

from __future__ import annotations

from collections.abc import Sequence

from netdiag.diagnose.bottleneck import Bottleneck
from netdiag.diagnose.collect import Peer, Selection, parse_peer
from netdiag.diagnose.model import (
    REAL_LIMITS,
    SEVERITY_RANK,
    VERDICTS,
    Finding,
    Severity,
    Verdict,
)
from netdiag.diagnose.verdict import Context, judge
from netdiag.diagnose.window import ConnWindow, Sample
from netdiag.diagnose.window import build as build_window


def judge_samples(samples: Sequence[Sample], rate_bps: int | None = None) -> Finding:
    """One socket's samples (oldest first) -> its finding, with no other context."""
    return judge(build_window(samples), Context(rate_bps=rate_bps))


__all__ = [
    "REAL_LIMITS",
    "SEVERITY_RANK",
    "VERDICTS",
    "Bottleneck",
    "ConnWindow",
    "Context",
    "Finding",
    "Peer",
    "Sample",
    "Selection",
    "Severity",
    "Verdict",
    "build_window",
    "judge",
    "judge_samples",
    "parse_peer",
]
