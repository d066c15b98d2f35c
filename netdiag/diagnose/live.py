"""The verdict engine inside a trace pipeline: trace-peers' VERDICT column.

Each read's sock_diag snapshot (the pipeline's Frame.conns) is one Sample per socket; a
socket is judged over its last `window_reads` samples (deltas, as `diagnose` does) once it
has two, so a verdict always rests on a window, never on one snapshot. Lives here, not in
netdiag.trace: diagnose builds on trace, never the other way round.
"""

from __future__ import annotations

from collections import Counter, deque

from netdiag.diagnose import bottleneck, verdict, window
from netdiag.trace.pipeline import Frame

SKIP_STATES = {"LISTEN", "TIME_WAIT", "CLOSE", "SYN_SENT", "SYN_RECV"}


class VerdictStage:
    def __init__(self, window_reads: int = 5, rate_bps: int | None = None) -> None:
        if window_reads < 2:
            raise ValueError("a verdict needs a window of at least two reads")
        self.window_reads, self.rate_bps = window_reads, rate_bps
        self.samples: dict[int, deque[window.Sample]] = {}

    def __call__(self, frame: Frame) -> None:
        conns = frame.conns or []
        t_s = frame.snap.t_ns / 1e9
        live: set[int] = set()
        for c in conns:
            if c.info is None or c.state in SKIP_STATES:
                continue
            live.add(c.cookie)
            q = self.samples.setdefault(c.cookie, deque(maxlen=self.window_reads))
            q.append(window.Sample(t_s, c))
        self.samples = {k: q for k, q in self.samples.items() if k in live}
        wins = {k: window.build(list(q)) for k, q in self.samples.items() if len(q) >= 2}
        ctx = verdict.Context(
            rate_bps=self.rate_bps,
            peer_rates=bottleneck.per_host(wins.values()),
            listen_ports=frozenset(c.lport for c in conns if c.state == "LISTEN"),
        )
        counts: Counter[str] = Counter()
        for r in frame.snap.rows:
            w = wins.get(int(r.get("sock_cookie") or 0))
            if w is None:
                continue
            f = verdict.judge(w, ctx)
            r["verdict"] = f.verdict
            r["verdict_severity"] = f.severity
            r["verdict_summary"] = f.summary
            counts[f.verdict] += 1
        frame.extra["verdicts"] = dict(counts)
