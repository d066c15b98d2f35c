"""`netdiag bench probes overhead|accuracy|launch`: what tracing costs and how true it is."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from netdiag.cli.bench import finish, result_options


@click.group("probes")
def probes() -> None:
    """Probe overhead (throughput with vs without trace-peers) and accuracy (vs a lab link)."""


@probes.command("overhead")
@click.option(
    "--runs", type=int, default=3, show_default=True, help="Pairs of runs (without, with)."
)
@click.option("--seconds", type=float, default=3.0, show_default=True, help="iperf3 time per run.")
@click.option(
    "--interval", type=float, default=1.0, show_default=True, help="trace-peers interval."
)
@click.option(
    "--rates",
    default="max",
    show_default=True,
    help="Comma-separated offered loads, e.g. max,4G,1G,seg:4: unpaced, paced (iperf3 -b), or "
    "seg:N[:MSS] (N flows, one-segment skbs) or small:N[:LEN] (N flows of LEN-byte writes, "
    "TCP_NODELAY: the highest event rate); all in one run.",
)
@click.option(
    "--sample-ms",
    "sample_ms",
    default="0",
    show_default=True,
    help="Comma-separated probe variants (trace-peers --sample-ms; 0 = every ACK), e.g. 0,1: "
    "each variant and no probe, side by side in one run.",
)
@click.option(
    "--hooks",
    default="tracepoint",
    show_default=True,
    help="Comma-separated tcp_probe hooks (trace-peers --hook: tracepoint, tp_btf, auto), e.g. "
    "tp_btf,tracepoint: each with each --sample-ms variant, side by side in one run.",
)
@result_options("probes-overhead")
def overhead(
    runs: int,
    seconds: float,
    interval: float,
    rates: str,
    sample_ms: str,
    hooks: str,
    out: Path | None,
    as_json: bool,
) -> None:
    """Bulk TCP over a veth path with and without trace-peers, alternating in one run."""
    from netdiag.bench import probes as benchmarks
    from netdiag.bench import probes_rates
    from netdiag.errors import InputError

    rate_list = tuple(r.token for r in probes_rates.parse_list(rates))
    try:
        samples = tuple(dict.fromkeys(float(x) for x in sample_ms.split(",") if x.strip()))
    except ValueError:
        samples = ()
    if not samples or any(x < 0 for x in samples):
        raise InputError(f"--sample-ms {sample_ms!r} is not a list of ms >= 0", "e.g. 0,1")
    hook_list = tuple(dict.fromkeys(h.strip() for h in hooks.split(",") if h.strip()))
    if not hook_list or any(h not in ("auto", "tp_btf", "tracepoint") for h in hook_list):
        raise InputError(
            f"--hooks {hooks!r}: use auto, tp_btf, tracepoint", "e.g. tp_btf,tracepoint"
        )
    err = Console(stderr=True)
    doc = benchmarks.overhead(
        runs,
        seconds,
        interval,
        progress=lambda m: err.print(m),
        rates=rate_list,
        samples_ms=samples,
        hooks=hook_list,
    )
    params = {
        "runs": runs,
        "seconds": seconds,
        "interval": interval,
        "rates": ",".join(rate_list),
        "sample_ms": ",".join(f"{x:g}" for x in samples),
        "hooks": ",".join(hook_list),
    }
    finish(benchmarks.overhead_result(doc, params), out, as_json)


@probes.command("accuracy")
@click.option("--delay-ms", type=float, default=20.0, show_default=True)
@click.option("--rate-mbit", type=float, default=50.0, show_default=True)
@click.option("--loss", type=float, default=0.002, show_default=True)
@click.option("--mbytes", type=float, default=8.0, show_default=True, help="Bulk transfer size.")
@click.option(
    "--gso/--one-segment",
    default=False,
    show_default=True,
    help="Let TCP build multi-segment skbs (retransmit events then count fewer than the "
    "kernel's segment counters).",
)
@click.option(
    "--hook",
    type=click.Choice(["tracepoint", "tp_btf", "auto"]),
    default="tracepoint",
    show_default=True,
    help="tcp_probe hook of the probe under test (trace-peers --hook).",
)
@result_options("probes-accuracy")
def accuracy(
    delay_ms: float,
    rate_mbit: float,
    loss: float,
    mbytes: float,
    gso: bool,
    hook: str,
    out: Path | None,
    as_json: bool,
) -> None:
    """min RTT, BDP, retransmits and cwnd from the probes against a lab link's configured truth."""
    from netdiag.bench import probes_accuracy as benchmarks

    err = Console(stderr=True)
    doc = benchmarks.accuracy(
        delay_ms,
        rate_mbit,
        loss,
        int(mbytes * (1 << 20)),
        one_segment=not gso,
        progress=lambda m: err.print(m),
        hook=hook,
    )
    params = {
        "delay_ms": delay_ms,
        "rate_mbit": rate_mbit,
        "loss": loss,
        "mbytes": mbytes,
        "gso": gso,
        "hook": hook,
    }
    finish(benchmarks.accuracy_result(doc, params), out, as_json)


@probes.command("launch")
@click.option("--runs", type=int, default=3, show_default=True, help="Launches per loader.")
@click.option(
    "--interval", type=float, default=1.0, show_default=True, help="trace-peers interval."
)
@click.option(
    "--steady-rows", type=int, default=3, show_default=True, help="Rows before RSS is read."
)
@result_options("probes-launch")
def launch(runs: int, interval: float, steady_rows: int, out: Path | None, as_json: bool) -> None:
    """trace-peers time to first row and resident memory, bcc in-process vs the light loader."""
    from netdiag.bench import probes_launch
    from netdiag.errors import InputError

    if runs < 1 or interval <= 0 or steady_rows < 0:
        raise InputError(
            "--runs must be >= 1, --interval > 0, --steady-rows >= 0",
            "e.g. --runs 3 --interval 1 --steady-rows 3",
        )
    err = Console(stderr=True)
    doc = probes_launch.launch(runs, interval, steady_rows, progress=lambda m: err.print(m))
    params = {"runs": runs, "interval": interval, "steady_rows": steady_rows}
    finish(probes_launch.launch_result(doc, params), out, as_json)
