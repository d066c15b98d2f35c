"""When BPF is unavailable: tcp_peers-shaped rows from sock_diag polling (no history, no
histogram, RTT is the kernel's current estimate — said so in every snapshot's notes).

tcp_info counters are lifetime totals, so a socket gets a rate only from its second sample
on: a baseline is taken when the poller opens, and a socket first seen later shows none for
its first interval (its lifetime average is not a rate)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from netdiag.measure import sockdiag
from netdiag.trace.decode import Row, apply_rates
from netdiag.trace.engine import Snapshot
from netdiag.trace.manifest import Probe

NOTE = "eBPF unavailable: polling sock_diag (tcp_info) — no RTT history, histogram or lifecycle"
# every state but TIME_WAIT: those are no connections any more, and a host that churns has
# thousands of them (2,582 here, 1.3 s of sock_diag decoding per snapshot when included)
ALL_STATES = ((1 << 12) - 1) & ~(1 << 6)
SHOWN = {"LISTEN", "TIME_WAIT", "CLOSE", "SYN_RECV"}  # not connections of their own


def row_of(c: sockdiag.TcpConn) -> Row:
    i = c.info
    return {
        "sock_cookie": c.cookie,
        "family": c.family,
        "laddr": c.laddr,
        "lport": c.lport,
        "raddr": c.raddr,
        "rport": c.rport,
        "peer": c.peer,
        "state": c.state,
        "min_rtt_us": i.min_rtt_us if i else None,
        "cc": c.cc,
        "srtt_min_us": None,
        "srtt_us": i.rtt_us if i else None,
        "srtt_max_us": None,
        "srtt_mean_us": None,
        "srtt_p50_us": None,
        "srtt_p90_us": None,
        "srtt_p99_us": None,
        "srtt_hist": None,
        "snd_cwnd": i.snd_cwnd if i else None,
        "ssthresh": i.snd_ssthresh if i else None,
        "snd_wnd": i.snd_wnd if i else None,
        "rcv_wnd": i.rcv_space if i else None,
        "bytes_acked": i.bytes_acked if i else 0,
        "retrans": i.total_retrans if i else 0,
        "events": None,
        "age_s": None,
        "cgroup_id": c.cgroup_id,
    }


class Poller:
    """Same interface as engine.Session's read() for the tcp_peers probe. `conns` holds the
    last sock_diag snapshot (all states) so the pipeline's filters need not ask again."""

    def __init__(
        self,
        probe: Probe,
        ports: tuple[int, ...],
        netns_name: str | None,
        snapshot: Callable[..., Iterable[sockdiag.TcpConn]] = sockdiag.snapshot,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self.probe, self.ports, self.netns_name = probe, ports, netns_name
        self.snapshot, self.clock = snapshot, clock
        self.conns: list[sockdiag.TcpConn] = []
        self._prev: dict[int, Row] = {}
        self.attached_ns = self._t = clock()

    def open(self) -> Poller:
        """The baseline sample: the first read has rates for every socket alive now."""
        self._prev = {r["sock_cookie"]: r for r in self._rows()}
        self.attached_ns = self._t = self.clock()
        return self

    def _rows(self) -> list[Row]:
        self.conns = list(self.snapshot(self.netns_name, states=ALL_STATES, ports=self.ports))
        return [row_of(c) for c in self.conns if c.state not in SHOWN]

    def read(self) -> Snapshot:
        rows = self._rows()
        now = self.clock()
        dt = (now - self._t) / 1e9
        apply_rates(
            self.probe, rows, self._prev, dt, lambda r: r["sock_cookie"], counted_from_zero=False
        )
        self._prev = {r["sock_cookie"]: r for r in rows}
        self._t = now
        return Snapshot(
            self.probe.name, now, dt, rows, {}, 0, 0.0, 0, source="sock_diag", notes=[NOTE]
        )

    def close(self) -> None:
        return None
