"""The path's bottleneck rate, estimated apart from the connection's own (maybe limited) rate.

A window- or buffer-limited flow delivers window / RTT, so a BDP computed from its own delivery
rate always "fits" its window: the old `bdp` advised 78 kB where the path needed ~635 kB.
Sources, best first:

1. the operator's `--rate` (they know the link);
2. BBR's bottleneck-bandwidth estimate (a max filter over ~10 round trips of delivery samples,
   taken while BBR probes above its rate) — of this or any connection to the same peer host;
3. the largest non-app-limited delivery-rate sample of any *other* connection to the same peer
   host (a flow that was not held by its own window saw more of the path);
4. this connection's own largest non-app-limited delivery rate — a lower bound only, marked so.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from netdiag.diagnose.window import ConnWindow


@dataclass(frozen=True)
class Bottleneck:
    rate_bps: int | None
    source: str  # "operator --rate" | "bbr" | "peer connections" | "own delivery rate" | "none"
    lower_bound: bool  # True: only the connection's own rate was known; the path may be faster

    def bdp_bytes(self, min_rtt_us: int | None) -> int | None:
        if not self.rate_bps or not min_rtt_us:
            return None
        return int(self.rate_bps / 8 * min_rtt_us / 1e6)

    def buffer_bytes(self, min_rtt_us: int | None) -> int | None:
        """What every buffer fix sizes to: 2 × bottleneck × min RTT."""
        bdp = self.bdp_bytes(min_rtt_us)
        return 2 * bdp if bdp is not None else None


def per_host(windows: Iterable[ConnWindow]) -> dict[str, int]:
    """Best independent rate per peer host: BBR bw or a non-app-limited delivery sample."""
    out: dict[str, int] = {}
    for w in windows:
        best = max(w.bbr_bw_bps or 0, w.delivery_max_bps or 0)
        if best > out.get(w.raddr, 0):
            out[w.raddr] = best
    return out


def estimate(
    w: ConnWindow,
    *,
    rate_bps: int | None = None,
    peer_rates: dict[str, int] | None = None,
    own_rate_limited: bool = False,
) -> Bottleneck:
    """`own_rate_limited`: the connection was held by its own window or buffer, so its delivery
    rate (and a BBR estimate built from it) measures that limit, not the path."""
    if rate_bps:
        return Bottleneck(rate_bps, "operator --rate", False)
    own = max(w.bbr_bw_bps or 0, w.delivery_max_bps or 0)
    other = (peer_rates or {}).get(w.raddr, 0)
    if other > own * 1.1:
        return Bottleneck(other, "peer connections", False)
    if w.bbr_bw_bps and not own_rate_limited:
        return Bottleneck(w.bbr_bw_bps, "bbr", False)
    if own:
        return Bottleneck(own, "own delivery rate", True)
    return Bottleneck(None, "none", True)
