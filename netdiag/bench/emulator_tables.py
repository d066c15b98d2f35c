"""The tables `netdiag bench emulator` prints (grid points; star labs with --scale)."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def _app_lost_more(p: dict[str, Any]) -> bool:
    return bool(p.get("loss_app") is not None and p["loss_app"] > p["loss_observed"] + 0.005)


def _ms(us: float | None) -> str:
    return "—" if us is None else f"{us / 1e3:+.3f}"


def table(result: dict[str, Any]) -> Table:
    t = Table(title=f"emulator fidelity — engine {result['engine']}", show_edge=False)
    for c in (
        "rate",
        "delay",
        "RTT p50",
        "err raw",
        "",
        "err cal",
        "",
        "lab says",
        "link/rate",
        "",
        "TCP/rate",
        "loss [95% CI]",
        "",
        "CPU%",
    ):
        t.add_column(c, justify="right", no_wrap=True)

    def ok(v: bool | None) -> str:
        return "—" if v is None else ("✓" if v else "✗")

    for p in result["points"]:
        loss = (
            f"{p['loss_observed'] * 100:.2f}% "
            f"[{p['loss_ci95'][0] * 100:.2f},{p['loss_ci95'][1] * 100:.2f}]"
            if "loss_observed" in p
            else "—"
        )
        t.add_row(
            f"{p['rate_bps'] / 1e6:g}M",
            f"{p['delay_us'] / 1e3:g}ms",
            f"{p['rtt_median_us'] / 1e3:.3f}",
            _ms(p.get("rtt_err_uncalibrated_us")),
            ok(p.get("rtt_ok_uncalibrated")),
            f"{p['rtt_err_us'] / 1e3:+.3f}",
            ok(p["rtt_ok"]),
            _ms(p.get("calibration_residual_us")),
            f"{p['rate_ratio']:.3f}" + ("†" if p.get("udp_sender_limited") else ""),
            ok(p["rate_ok"]),
            f"{p['goodput_ratio']:.3f}",
            loss,
            ok(p.get("loss_ok")) + ("‡" if _app_lost_more(p) else ""),
            f"{p['emulator_cpu_pct']}" if p["emulator_cpu_pct"] is not None else "—",
        )
    notes = [
        "RTT error (ms) of the same link before (raw) and after (cal) the lab subtracted its "
        "own measured latency; lab says: the residual `lab status` reports. Goal |err| <= "
        "0.1 ms + 0.5 %"
    ]
    if any(p.get("udp_sender_limited") for p in result["points"]):
        notes.append(
            "† sender-limited: the link sat idle > 2 % of the window (iperf3 stalled or "
            "was slower than the rate) — not judged; see link_busy, rate_ratio_busy"
        )
    if any(_app_lost_more(p) for p in result["points"]):
        notes.append(
            "‡ the receiving iperf3 lost more (socket overruns on this busy host): "
            "loss_app in the JSON"
        )
    t.caption = "\n".join(notes) or None
    return t


def scale_table(rows: list[dict[str, Any]]) -> Table:
    t = Table(title="lab scale: half the links loaded (TCP), half pinged", show_edge=False)
    for c in ("namespaces", "up s", "RTT err worst", "", "TCP/rate min", "mean", "", "CPU%"):
        t.add_column(c, justify="right", no_wrap=True)
    for r in rows:
        t.add_row(
            str(r["namespaces"]),
            f"{r['up_s']:.1f}",
            f"{r['rtt_err_us_worst'] / 1e3:+.3f}ms",
            "✓" if r["rtt_ok"] else "✗",
            f"{r['goodput_ratio_min']:.3f}",
            f"{r['goodput_ratio_mean']:.3f}",
            "✓" if r["rate_ok"] else "✗",
            f"{r['emulator_cpu_pct']}",
        )
    return t
