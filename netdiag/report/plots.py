"""Plots of result files (matplotlib, Agg, no pyplot global state).

Each plot function takes the runs to draw — ``[(label, doc)]``, one run or two to compare — and
returns a Figure, or None when no run holds the data it needs: a file gets only the plots of the
series it has.
"""

from __future__ import annotations

import io
import itertools
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from netdiag.report import results

Run = tuple[str, Mapping[str, Any]]

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
MAX_LEGEND = 10


@dataclass(frozen=True)
class Plot:
    name: str
    title: str
    png: bytes


def _variants_of(doc: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> list[str]:
    seen = [str(v) for v in results.variants(doc)]
    for r in rows:
        v = str(r.get("variant", ""))
        if v not in seen:
            seen.append(v)
    return seen


def _label(run_label: str, variant: str, many_runs: bool) -> str:
    parts = [p for p in ((run_label if many_runs else ""), variant) if p]
    return " ".join(parts) or "run"


def _new_figure(width: float = 8.0, height: float = 4.2) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def propagation_cdf(runs: Sequence[Run]) -> Figure | None:
    """CDF of first-publish → arrival delay per kind, with the shortest-path lower bound dashed."""
    data: dict[str, list[tuple[str, list[float | None], list[float]]]] = defaultdict(list)
    for run_label, doc in runs:
        rows = results.rows(doc, "raw", "propagation")
        for variant in _variants_of(doc, rows):
            by_kind: dict[str, tuple[list[float | None], list[float]]] = defaultdict(
                lambda: ([], [])
            )
            for r in rows:
                if str(r.get("variant", "")) != variant:
                    continue
                d, lb = r.get("delay_us"), r.get("lower_bound_us")
                delays, bounds = by_kind[str(r.get("kind", "message"))]
                delays.append(float(d) / 1000 if isinstance(d, int | float) else None)
                if isinstance(lb, int | float):
                    bounds.append(float(lb) / 1000)
            for kind, (delays, bounds) in by_kind.items():
                data[kind].append((_label(run_label, variant, len(runs) > 1), delays, bounds))
    if not data:
        return None
    kinds = sorted(data, key=lambda k: (k != "block", k))
    fig = _new_figure(width=5.0 * len(kinds) + 1, height=4.2)
    axes = fig.subplots(1, len(kinds), squeeze=False)[0]
    for ax, kind in zip(axes, kinds, strict=True):
        for color, (label, delays, bounds) in zip(
            itertools.cycle(COLORS), data[kind], strict=False
        ):
            total = len(delays)
            got = sorted(d for d in delays if d is not None)
            if got:
                # undelivered arrivals stay in the denominator: the curve tops out at delivery ratio
                ys = [(i + 1) / total for i in range(len(got))]
                ax.step(got, ys, where="post", color=color, label=f"{label} (n={total})")
            if bounds:
                lbs = sorted(bounds)
                ax.step(
                    lbs,
                    [(i + 1) / len(lbs) for i in range(len(lbs))],
                    where="post",
                    color=color,
                    linestyle="--",
                    alpha=0.7,
                    label=f"{label} lower bound",
                )
        ax.set_title(f"{kind} propagation")
        ax.set_xlabel("first publish → arrival (ms)")
        ax.set_ylabel("fraction of (message, node) arrivals")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="lower right")
    return fig


def _time_series(
    runs: Sequence[Run], metric: str, scale: float, ylabel: str, title: str
) -> Figure | None:
    panels: list[tuple[str, list[float], dict[str, list[float | None]]]] = []
    for run_label, doc in runs:
        found = results.series_where(doc, metric=metric)
        if not found:
            continue
        meta = doc.get("series_meta", {})
        by_variant: dict[str, dict[str, list[float | None]]] = defaultdict(dict)
        for name, values in found.items():
            labels = meta.get(name, {})
            series_label = str(labels.get("link") or labels.get("node") or name)
            by_variant[str(labels.get("variant", ""))][series_label] = values
        order = [str(v) for v in results.variants(doc)]
        for variant in sorted(by_variant, key=lambda v: (order.index(v) if v in order else 99, v)):
            series = by_variant[variant]
            panels.append((_label(run_label, variant, len(runs) > 1), doc["x_values"], series))
    if not panels:
        return None
    fig = _new_figure(width=8.0, height=2.6 * len(panels) + 0.6)
    axes = fig.subplots(len(panels), 1, squeeze=False, sharex=True)[:, 0]
    for ax, (label, xs, series) in zip(axes, panels, strict=True):
        many = len(series) > MAX_LEGEND
        for color, (name, values) in zip(
            itertools.cycle(COLORS), sorted(series.items()), strict=False
        ):
            pts = [(x, v * scale) for x, v in zip(xs, values, strict=True) if v is not None]
            if not pts:
                continue
            if many:  # a cloud of thin lines; the median and p10–p90 band carry the message
                ax.plot(
                    [p[0] for p in pts], [p[1] for p in pts], color="0.6", linewidth=0.5, alpha=0.35
                )
            else:
                ax.plot(
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                    color=color,
                    linewidth=1,
                    marker="." if len(pts) < 30 else None,
                    label=name,
                )
        if many:
            bx, med, lo, hi = _bands(xs, list(series.values()), scale)
            ax.fill_between(bx, lo, hi, color=COLORS[0], alpha=0.2, label="p10–p90")
            ax.plot(bx, med, color=COLORS[0], linewidth=2, label="median")
        ax.set_title(f"{title} — {label} ({len(series)} series)", fontsize="medium")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small", ncol=2, loc="upper right")
    axes[-1].set_xlabel("time since start (s)")
    return fig


def _bands(
    xs: Sequence[float], series: Sequence[Sequence[float | None]], scale: float
) -> tuple[list[float], list[float], list[float], list[float]]:
    """Per x: median, p10 and p90 across the series that have a sample there."""
    bx: list[float] = []
    med: list[float] = []
    lo: list[float] = []
    hi: list[float] = []
    for i, x in enumerate(xs):
        vals = sorted(v[i] * scale for v in series if v[i] is not None)  # type: ignore[operator]
        if not vals:
            continue
        bx.append(x)
        med.append(vals[len(vals) // 2])
        lo.append(vals[int(0.1 * (len(vals) - 1))])
        hi.append(vals[int(0.9 * (len(vals) - 1))])
    return bx, med, lo, hi


def rtt_over_time(runs: Sequence[Run]) -> Figure | None:
    return _time_series(runs, "srtt_us", 1e-3, "smoothed RTT (ms)", "per-link RTT")


def cwnd_over_time(runs: Sequence[Run]) -> Figure | None:
    return _time_series(runs, "cwnd_segs", 1.0, "cwnd (segments)", "per-link cwnd")


def throughput_retrans(runs: Sequence[Run]) -> Figure | None:
    """Bars per variant: throughput and retransmitted segments, from summary.transport."""
    labels: list[str] = []
    tput: list[float] = []
    retrans: list[float] = []
    for run_label, doc in runs:
        for r in results.rows(doc, "summary", "transport"):
            t, rs = r.get("throughput_bps"), r.get("retrans_segs")
            if not isinstance(t, int | float) and not isinstance(rs, int | float):
                continue
            labels.append(_label(run_label, str(r.get("variant", "")), len(runs) > 1))
            tput.append(float(t) / 1e6 if isinstance(t, int | float) else 0.0)
            retrans.append(float(rs) if isinstance(rs, int | float) else 0.0)
    if not labels:
        return None
    fig = _new_figure(width=8.0, height=3.6)
    ax1, ax2 = fig.subplots(1, 2)
    colors = [COLORS[i % len(COLORS)] for i in range(len(labels))]
    for ax, values, ylabel in (
        (ax1, tput, "throughput (Mbit/s)"),
        (ax2, retrans, "retransmitted segments"),
    ):
        bars = ax.bar(labels, values, color=colors)
        ax.bar_label(bars, fmt="%.3g", fontsize="small")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, axis="y")
        ax.tick_params(axis="x", labelrotation=20)
    fig.suptitle("transport by congestion control (all peer sockets, load phase)")
    return fig


def sync_progress(runs: Sequence[Run]) -> Figure | None:
    """Height of each syncing node over time, per (variant, case), target height dotted."""
    curves: list[tuple[str, list[float], list[float], float | None]] = []
    for run_label, doc in runs:
        rows = results.rows(doc, "raw", "sync")
        groups: dict[tuple[str, str, str], list[Mapping[str, Any]]] = defaultdict(list)
        many_rounds = len({r.get("round") for r in rows}) > 1
        for r in rows:
            rnd = f" r{r.get('round')}" if many_rounds else ""
            groups[(str(r.get("variant", "")), str(r.get("case", "sync")), rnd)].append(r)
        for (variant, case, rnd), rs in groups.items():
            pts = [
                (float(r["t_s"]), float(r["height"]))
                for r in rs
                if isinstance(r.get("t_s"), int | float)
                and isinstance(r.get("height"), int | float)
            ]
            if not pts:
                continue
            targets = [r.get("target_height") for r in rs]
            target = max((float(t) for t in targets if isinstance(t, int | float)), default=None)
            label = f"{_label(run_label, variant, len(runs) > 1)} {case}{rnd}"
            curves.append((label, [p[0] for p in pts], [p[1] for p in pts], target))
    if not curves:
        return None
    fig = _new_figure(width=8.0, height=4.0)
    ax = fig.subplots()
    for color, (label, ts, hs, target) in zip(itertools.cycle(COLORS), curves, strict=False):
        ax.plot(ts, hs, color=color, marker=".", label=label)
        if target is not None:
            ax.axhline(target, color=color, linestyle=":", alpha=0.6)
    ax.set_title("sync progress (dotted: the cluster's height)")
    ax.set_xlabel("time since the node (re)started (s)")
    ax.set_ylabel("block height")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


PLOTS: list[tuple[str, str, Callable[[Sequence[Run]], Figure | None]]] = [
    ("propagation_cdf", "Gossip propagation CDF vs shortest-path lower bound", propagation_cdf),
    ("rtt_over_time", "Per-link RTT over time", rtt_over_time),
    ("cwnd_over_time", "Per-link cwnd over time", cwnd_over_time),
    ("throughput_retrans", "Throughput and retransmits by congestion control", throughput_retrans),
    ("sync_progress", "Sync progress", sync_progress),
]


def png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def render(runs: Sequence[Run]) -> list[Plot]:
    out = []
    for name, title, fn in PLOTS:
        fig = fn(runs)
        if fig is not None:
            out.append(Plot(name, title, png(fig)))
    return out
