"""Judge one connection's window: which limit held it, the evidence, the fix.

Decision order (docs/diagnose.md gives the reasoning and the tcp_info semantics):

 1. idle            nothing moved and nothing queued
 2. receive side    (the socket mostly receives) receiver-slow when its own unread queue fills
                    its receive buffer; rwnd-limited when autotuning hit tcp_rmem max
 3. receiver-slow   the sender was rwnd-limited and the peer's window kept closing (< 2 MSS)
 4. rwnd-limited    tcpi_rwnd_limited ≥ 20 % of busy time
 5. sndbuf-limited  tcpi_sndbuf_limited ≥ 20 % of busy time (or the write queue sat at sndbuf)
 6. app-limited     busy < 50 % of the window, or most delivery samples app-limited with
                    nothing left unsent, or bbr delivering < 50 % of its own bw estimate
 7. rtt-inflated    a standing queue: median srtt ≥ 2 × min RTT (and ≥ 2 ms above it), the
                    lowest srtt ≥ 1.5 × min RTT
 8. loss-limited    retransmits in the window, loss-based cc, and no queue ever built
                    (losses the sender did not cause by filling a buffer)
 9. bbr             cwnd-limited when packets in flight sat at cwnd and cwnd < 1.5 × BBR's
                    BDP; else path-limited (BBR paces at its measured bottleneck)
10. loss-based cc   path-limited when a queue built or losses came with one; cwnd-limited
                    when the window held still below the path (no loss, no queue)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from netdiag.diagnose.bottleneck import Bottleneck, estimate
from netdiag.diagnose.model import Evidence, Finding, Severity, Verdict, human_bps, human_bytes
from netdiag.diagnose.window import ConnWindow

# thresholds (docs/diagnose.md explains each)
IDLE_BYTES_PER_S = 1000  # under this (both directions) with no busy time: idle
LIMIT_SHARE = 0.2  # a chrono limit holding the sender this share of busy time is the limit
SEVERE_SHARE = 0.8
APP_BUSY_SHARE = 0.5  # busy under half the window: the application did not keep data queued
APP_SAMPLE_SHARE = 0.5
SMALL_WND_SHARE = 0.2  # peer window under 2 MSS in this share of samples: receiver not reading
# a window never above 16 kB: Linux receivers start at tcp_rmem[1] (128 kB, ~64 kB of window);
# one this small is a receive buffer full of unread data (or an SO_RCVBUF pinned tiny)
TINY_WINDOW = 16384
INFLATED_MEDIAN = 2.0  # median srtt / min RTT
INFLATED_FLOOR = 1.5  # lowest srtt / min RTT: the queue stands, it does not just pass
INFLATED_MIN_EXCESS_US = 2000
QUEUE_SEEN_SHARE = 0.1  # median srtt ≥ min RTT × (1 + this) (and ≥ 1 ms above): a queue stands
QUEUE_SEEN_MIN_US = 1000
BBR_CWND_BOUND = 1.5  # bbr runs cwnd at 2 × its BDP; at ≈ 1 × the window, not pacing, binds
RCVBUF_CAPPED = 0.9  # receive buffer at this share of tcp_rmem max: autotuning hit the cap
EPHEMERAL_LOW = 32768  # ip_local_port_range default low end: ports at/above are clients'


@dataclass(frozen=True)
class Context:
    """What the engine knows beyond the socket: the operator's rate, the other connections to
    the same hosts, the namespace's buffer limits, route metrics."""

    rate_bps: int | None = None
    peer_rates: dict[str, int] = field(default_factory=dict)
    rmem_max: int | None = None
    wmem_max: int | None = None
    route_cwnd_lock: dict[str, int] = field(default_factory=dict)  # peer addr -> locked cwnd
    listen_ports: frozenset[int] = frozenset()  # ports this host listens on (service ports)


def service_port(w: ConnWindow, ctx: Context) -> int:
    """The port that names the service (what `tune --cc bbr --port N` should match)."""
    if w.lport in ctx.listen_ports:
        return w.lport
    if w.rport in ctx.listen_ports:
        return w.rport
    if w.rport < EPHEMERAL_LOW <= w.lport:
        return w.rport
    if w.lport < EPHEMERAL_LOW <= w.rport:
        return w.lport
    return min(w.lport, w.rport)


def _ms(us: int | None) -> str:
    if not us:
        return "-"
    return f"{us / 1000:.1f} ms" if us >= 1000 else f"{us / 1000:.3f} ms"


def base_evidence(w: ConnWindow, bn: Bottleneck) -> Evidence:
    return {
        "window_s": round(w.elapsed_s, 2),
        "samples": w.samples,
        "cc": w.cc,
        "busy_pct": round(100 * w.busy_share, 1),
        "rwnd_limited_pct": round(100 * w.rwnd_share, 1),
        "sndbuf_limited_pct": round(100 * w.sndbuf_share, 1),
        "send_rate_bps": int(w.send_rate_bps),
        "recv_rate_bps": int(w.recv_rate_bps),
        "delivery_max_bps": w.delivery_max_bps,
        "sustained_bps": w.bw.sustained_bps if w.bw else None,
        "burst_samples_rejected": w.bw.rejected if w.bw else 0,
        "app_limited_samples_pct": round(100 * w.app_limited_share, 1),
        "min_rtt_us": w.min_rtt_us,
        "srtt_median_us": w.srtt_median_us,
        "srtt_max_us": w.srtt_max_us,
        "cwnd_pkts": w.cwnd_last,
        "cwnd_bytes": w.cwnd_bytes,
        "ssthresh_pkts": w.ssthresh_last,
        "snd_wnd_bytes": w.snd_wnd_last,
        "retrans_segs": w.retrans_segs,
        "retrans_pct": round(100 * w.loss_rate, 3),
        "bottleneck_bps": bn.rate_bps,
        "bottleneck_source": bn.source,
        "bdp_bytes": bn.bdp_bytes(w.min_rtt_us),
    }


def _conf(w: ConnWindow, base: float) -> float:
    # few samples or a very short window: less sure
    c = base
    if w.samples < 5:
        c *= 0.7
    if w.elapsed_us < 500_000:
        c *= 0.8
    return max(0.05, min(0.99, c))


def _buffer_fix(bn: Bottleneck, w: ConnWindow, sysctl: str, side: str) -> str:
    size = bn.buffer_bytes(w.min_rtt_us)
    if size is None:
        return f"raise {sysctl} max on the {side} to 2 × bottleneck × min RTT"
    third = f'{sysctl}="4096 131072 {size}"'
    if bn.lower_bound:
        return (
            f"raise {sysctl} max on the {side} to at least {human_bytes(size)} (2 × "
            f"{human_bps(bn.rate_bps)} × {_ms(w.min_rtt_us)}; a lower bound — the flow's own "
            f"rate was held by the limit: rerun with --rate <link rate> for the exact size), "
            f"e.g. netdiag tune --set net.ipv4.{third}"
        )
    return (
        f"raise {sysctl} max on the {side} to ≥ {human_bytes(size)} (2 × "
        f"{human_bps(bn.rate_bps)} bottleneck ({bn.source}) × {_ms(w.min_rtt_us)} min RTT), "
        f"e.g. netdiag tune --set net.ipv4.{third}"
    )


def judge(w: ConnWindow, ctx: Context | None = None) -> Finding:
    """One connection's window -> one finding."""
    ctx = ctx or Context()
    subject = f"{w.peer} (local :{w.lport})"

    def out(
        verdict: Verdict,
        severity: Severity,
        confidence: float,
        summary: str,
        fix: str | None,
        bn: Bottleneck,
        **extra: int | float | str | bool | None,
    ) -> Finding:
        ev = base_evidence(w, bn)
        ev["service_port"] = service_port(w, ctx)
        ev.update(extra)
        return Finding(
            "connection",
            subject,
            verdict,
            severity,
            _conf(w, confidence),
            ev,
            summary,
            fix,
            sock_cookie=w.cookie,
        )

    moved = w.acked_bytes + w.received_bytes
    # 1. idle
    if (
        w.elapsed_us > 0
        and moved < IDLE_BYTES_PER_S * max(w.elapsed_s, 1.0)
        and w.busy_share < 0.05
        and w.notsent_max == 0
        and w.rqueue_max == 0
    ):
        bn = estimate(w, rate_bps=ctx.rate_bps, peer_rates=ctx.peer_rates)
        return out(
            "idle",
            "info",
            0.95,
            f"idle: {moved} B moved in {w.elapsed_s:.1f} s, nothing queued",
            None,
            bn,
        )
    # 2. the receiving side of a transfer: judge what this host controls
    if w.received_bytes > 4 * max(w.acked_bytes, 1) and w.busy_share < APP_BUSY_SHARE:
        return _judge_receiver(w, ctx, out)
    own_limited = w.rwnd_share >= LIMIT_SHARE or w.sndbuf_share >= LIMIT_SHARE
    bn = estimate(w, rate_bps=ctx.rate_bps, peer_rates=ctx.peer_rates, own_rate_limited=own_limited)
    # 3./4. the peer's receive window
    if w.rwnd_share >= LIMIT_SHARE and w.rwnd_share >= w.sndbuf_share:
        sev: Severity = "error" if w.rwnd_share >= SEVERE_SHARE else "warn"
        closing = (
            w.small_wnd_share >= SMALL_WND_SHARE
            or w.wnd_shrink_share >= SMALL_WND_SHARE
            or w.zero_window_probes > 0
            or 0 < w.snd_wnd_max < TINY_WINDOW
        )
        if closing:
            return out(
                "receiver-slow",
                sev,
                0.6 + 0.3 * min(1.0, w.small_wnd_share * 2),
                f"receiver-slow: rwnd-limited {w.rwnd_share:.0%} of busy time and the peer's "
                f"window stayed small or kept closing ({w.snd_wnd_min}-{w.snd_wnd_max} B, shrank "
                f"between {w.wnd_shrink_share:.0%} of samples, under 2 × MSS in "
                f"{w.small_wnd_share:.0%}): unread data fills the receiver's buffer — its "
                "application reads too slowly",
                "the receiver's application must read faster (profile its read loop / event "
                "loop); a bigger receive buffer only delays the stall",
                bn,
                small_wnd_samples_pct=round(100 * w.small_wnd_share, 1),
                wnd_shrink_samples_pct=round(100 * w.wnd_shrink_share, 1),
                snd_wnd_min_bytes=w.snd_wnd_min,
                zero_window_probes=w.zero_window_probes,
            )
        return out(
            "rwnd-limited",
            sev,
            0.6 + 0.35 * w.rwnd_share,
            f"rwnd-limited {w.rwnd_share:.0%} of busy time: the peer advertises "
            f"{human_bytes(w.snd_wnd_max)} at most, "
            f"{_fits(w.snd_wnd_max, bn, w)}",
            _buffer_fix(bn, w, "tcp_rmem", "receiver")
            + "; if it already is, the receiving application pins a small SO_RCVBUF",
            bn,
            snd_wnd_max_bytes=w.snd_wnd_max,
        )
    # 5. our send buffer
    if w.sndbuf_share >= LIMIT_SHARE or (
        w.wmem_full_share >= 0.5 and w.busy_share >= APP_BUSY_SHARE and w.sndbuf_share > 0.05
    ):
        sev = "error" if w.sndbuf_share >= SEVERE_SHARE else "warn"
        wmem = f" (tcp_wmem max {human_bytes(ctx.wmem_max)})" if ctx.wmem_max else ""
        return out(
            "sndbuf-limited",
            sev,
            0.6 + 0.35 * max(w.sndbuf_share, w.wmem_full_share * 0.5),
            f"sndbuf-limited {w.sndbuf_share:.0%} of busy time: the send buffer "
            f"{human_bytes(w.sndbuf_bytes or 0)}{wmem} was full "
            f"{w.wmem_full_share:.0%} of samples",
            _buffer_fix(bn, w, "tcp_wmem", "sender")
            + "; if it already is, the application pins a small SO_SNDBUF",
            bn,
            sndbuf_bytes=w.sndbuf_bytes,
            wmem_full_samples_pct=round(100 * w.wmem_full_share, 1),
        )
    # 6. the application
    # the kernel marks a delivery sample app-limited when the write queue ran dry with the
    # window open; with nothing unsent most of the time too, the application sets the pace
    app_samples = (
        w.app_limited_share >= APP_SAMPLE_SHARE and w.notsent_empty_share >= APP_SAMPLE_SHARE
    )
    # bbr delivering well under its own bottleneck estimate without being cwnd-bound
    bbr_idle = (
        w.cc == "bbr"
        and bool(w.bbr_bw_bps)
        and w.send_rate_bps < 0.5 * (w.bbr_bw_bps or 0)
        and w.cwnd_bound_share < 0.5
        and w.retrans_segs == 0
    )
    if w.busy_share < APP_BUSY_SHARE or app_samples or bbr_idle:
        return out(
            "app-limited",
            "info",
            0.9 if w.busy_share < 0.3 else 0.7,
            f"app-limited: data was queued only {w.busy_share:.0%} of the window "
            f"({human_bps(w.send_rate_bps)} sent; {w.app_limited_share:.0%} of delivery samples "
            "app-limited): the application, not the network, sets the pace",
            None,
            bn,
        )
    return _judge_busy(w, ctx, bn, out)


def _fits(wnd: int, bn: Bottleneck, w: ConnWindow) -> str:
    need = bn.buffer_bytes(w.min_rtt_us)
    if need is None:
        return "the path's BDP is unknown"
    word = "at least " if bn.lower_bound else ""
    return f"the path needs {word}{human_bytes(need)} (2 × BDP)"


def _judge_busy(w: ConnWindow, ctx: Context, bn: Bottleneck, out: _Out) -> Finding:
    mn = w.min_rtt_us or 0
    med = w.srtt_median_us or 0
    p10 = w.srtt_p10_us or 0
    # 7. a standing queue
    if (
        mn > 0
        and med >= INFLATED_MEDIAN * mn
        and med - mn >= INFLATED_MIN_EXCESS_US
        and p10 >= INFLATED_FLOOR * mn
    ):
        sev: Severity = "error" if med >= 4 * mn else "warn"
        bbr = w.cc == "bbr"
        return out(
            "rtt-inflated",
            sev,
            0.7 + 0.2 * min(1.0, (med / mn - 2) / 2),
            f"rtt-inflated: srtt median {_ms(med)} vs min RTT {_ms(mn)} "
            f"({med / mn:.1f}×): a standing queue of ~{_ms(med - mn)} on the path",
            (
                "a deep buffer on the path is full; a single bbr flow would not fill it — "
                "look for other flows sharing the bottleneck, or shorten the queue (fq_codel/cake)"
                if bbr
                else f"a loss-based cc fills the deep bottleneck buffer: "
                f"netdiag tune --cc bbr --port {service_port(w, ctx)} "
                "(or shorten the queue with fq_codel/cake at the bottleneck)"
            ),
            bn,
            srtt_over_min_rtt=round(med / mn, 2),
        )
    # a standing queue shows in the median srtt; the max alone also rises with the flow's own
    # bursts (a window sent at once waits cwnd × MTU / rate at the bottleneck)
    queue_seen = mn > 0 and med - mn >= max(QUEUE_SEEN_MIN_US, QUEUE_SEEN_SHARE * mn)
    loss = w.retrans_segs > 0
    lock = ctx.route_cwnd_lock.get(w.raddr)
    if lock is not None and w.cwnd_max > lock:
        lock = None  # the route says so, but this socket's cwnd is not held there
    # 8. random loss holding a loss-based cc
    if loss and w.cc != "bbr" and not queue_seen:
        sev = "error" if w.loss_rate >= 0.01 else "warn"
        return out(
            "loss-limited",
            sev,
            0.85 if w.retrans_segs >= 3 else 0.6,
            f"loss-limited: {w.retrans_segs} retransmits ({100 * w.loss_rate:.2f} % of bytes) "
            f"with no standing queue (srtt median {_ms(med)} vs min {_ms(mn)}): {w.cc} backs off "
            "on losses it did not cause",
            f"netdiag tune --cc bbr --port {service_port(w, ctx)}",
            bn,
        )
    # 9. bbr: cwnd or pacing?
    if w.cc == "bbr" and w.bbr_bw_bps and mn:
        bbr_bdp = w.bbr_bw_bps / 8 * mn / 1e6
        ratio = w.cwnd_bytes / bbr_bdp if bbr_bdp > 0 else 99.0
        if (ratio < BBR_CWND_BOUND and w.cwnd_bound_share >= 0.5) or lock:
            return _cwnd_limited(w, ctx, bn, out, lock, f"cwnd {ratio:.1f} × bbr's BDP")
        return out(
            "path-limited",
            "info",
            0.85,
            f"path-limited: bbr paces at its bottleneck estimate {human_bps(w.bbr_bw_bps)} "
            f"(delivered {human_bps(w.send_rate_bps)}); cwnd {ratio:.1f} × its BDP is not "
            "binding",
            None,
            bn,
            cwnd_over_bbr_bdp=round(ratio, 2),
        )
    # 10. loss-based cc, busy, no buffer limit
    full_rate = bool(ctx.rate_bps) and w.send_rate_bps >= 0.8 * (ctx.rate_bps or 0)
    clamped = not loss and w.cwnd_min == w.cwnd_max and w.cwnd_bound_share >= 0.5 and w.samples >= 3
    if clamped and not full_rate:
        # cubic/reno grow cwnd every round trip without loss: a window that does not move
        # while it is all in flight is held by something (route cwnd lock, a clamp)
        return _cwnd_limited(w, ctx, bn, out, lock, "cwnd constant, all in flight, no loss")
    if lock is None and (queue_seen or loss or full_rate):
        why = (
            f"{w.retrans_segs} retransmits came with a standing queue" if loss else "a queue stands"
        ) + f" (srtt median {_ms(med)} vs min {_ms(mn)})"
        if full_rate:
            why = f"delivery {human_bps(w.send_rate_bps)} ≥ 80 % of --rate"
        return out(
            "path-limited",
            "info",
            0.75,
            f"path-limited: {why}: the sender fills the bottleneck",
            None,
            bn,
        )
    return _cwnd_limited(w, ctx, bn, out, lock, "no loss and no queue")


def _cwnd_limited(
    w: ConnWindow, ctx: Context, bn: Bottleneck, out: _Out, lock: int | None, why: str
) -> Finding:
    slow_start = w.cwnd_last < w.ssthresh_last and w.cwnd_last > w.cwnd_first
    if lock is not None:
        cause = f"the route to {w.raddr} locks cwnd at {lock}"
        fix = f"remove the route's `cwnd lock {lock}` (ip route change … without it)"
        conf = 0.95
    elif slow_start:
        cause = "still in slow start (cwnd < ssthresh, growing)"
        fix = "short transfers end in slow start: reuse connections, or raise initcwnd on the route"
        conf = 0.7
    else:
        cause = "cwnd held still without loss or queue (route cwnd/initcwnd, cc clamp)"
        fix = "check `ip route get <peer>` for a cwnd lock or a small initcwnd and the cc's clamp"
        conf = 0.75
    return out(
        "cwnd-limited",
        "warn",
        conf,
        f"cwnd-limited: {w.cwnd_last} pkts ({human_bytes(w.cwnd_bytes)}) in flight "
        f"{w.cwnd_bound_share:.0%} of samples, {why}: {cause}",
        fix,
        bn,
        cwnd_bound_samples_pct=round(100 * w.cwnd_bound_share, 1),
        route_cwnd_lock=lock,
    )


def _judge_receiver(w: ConnWindow, ctx: Context, out: _Out) -> Finding:
    bn = estimate(w, rate_bps=ctx.rate_bps, peer_rates=ctx.peer_rates)
    if w.rqueue_full_share >= 0.5:
        return out(
            "receiver-slow",
            "warn",
            0.6 + 0.3 * w.rqueue_full_share,
            f"receiver-slow: unread data filled ≥ half the receive buffer "
            f"({human_bytes(w.rcvbuf_bytes or 0)}) in {w.rqueue_full_share:.0%} of samples: "
            "this host's application reads slowly",
            "the local application must read faster (its read loop is the limit)",
            bn,
            rqueue_full_samples_pct=round(100 * w.rqueue_full_share, 1),
            rcvbuf_bytes=w.rcvbuf_bytes,
        )
    # the buffer hit tcp_rmem max AND the window it allows (≥ 40 % of rcvbuf is advertised)
    # was used up each round trip: received rate ≈ window / RTT, so the cap is the limit
    window_used = (
        w.rcvbuf_bytes is not None
        and bool(w.min_rtt_us)
        and w.recv_rate_bps >= 0.4 * w.rcvbuf_bytes * 8 / ((w.min_rtt_us or 1) / 1e6)
    )
    capped = (
        ctx.rmem_max is not None
        and w.rcvbuf_bytes is not None
        and w.rcvbuf_bytes >= RCVBUF_CAPPED * ctx.rmem_max
        and window_used
    )
    if capped:
        return out(
            "rwnd-limited",
            "warn",
            0.6,
            f"rwnd-limited (receive side): the receive buffer grew to tcp_rmem max "
            f"({human_bytes(w.rcvbuf_bytes or 0)}) while data arrived at "
            f"{human_bps(w.recv_rate_bps)}",
            _buffer_fix(bn, w, "tcp_rmem", "receiver (this host)"),
            bn,
            rcvbuf_bytes=w.rcvbuf_bytes,
            rmem_max_bytes=ctx.rmem_max,
        )
    if w.rcv_ooo_pkts >= 3:
        return out(
            "loss-limited",
            "warn",
            0.5,
            f"receive side: {w.rcv_ooo_pkts} packets arrived out of order in the window "
            f"(holes from losses upstream) at {human_bps(w.recv_rate_bps)}: the sender "
            "recovers from loss — judge it on the sender for the cc's part",
            f"on the sender: netdiag diagnose --port {service_port(w, ctx)}; if it says "
            f"loss-limited, netdiag tune --cc bbr --port {service_port(w, ctx)} there",
            bn,
            rcv_ooo_pkts=w.rcv_ooo_pkts,
        )
    return out(
        "app-limited",
        "info",
        0.4,
        f"receive side: {human_bps(w.recv_rate_bps)} arrive, this host reads promptly and its "
        "buffer is not capped — the remote sender sets the pace (run diagnose there)",
        None,
        bn,
    )


class _Out(Protocol):  # the signature of judge()'s local `out`
    def __call__(
        self,
        verdict: Verdict,
        severity: Severity,
        confidence: float,
        summary: str,
        fix: str | None,
        bn: Bottleneck,
        **extra: int | float | str | bool | None,
    ) -> Finding: ...
