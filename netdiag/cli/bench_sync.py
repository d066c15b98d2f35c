"""`netdiag bench sync`: blocks/s of a late joiner syncing from 1, 2, 4 … peers, and the
speed-up over the first peer count, measured interleaved in one run."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from netdiag.cli.bench import finish, interleaved_rounds_option, result_options
from netdiag.errors import InputError


def _peer_counts(value: str) -> list[int]:
    try:
        counts = [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        counts = []
    if not counts or any(c < 1 or c > 16 for c in counts) or len(set(counts)) != len(counts):
        raise InputError(
            f"--peers {value!r} is not a list of distinct peer counts",
            "pass distinct integers 1..16 separated by commas, e.g. --peers 1,2,4",
        )
    return counts


@click.command()
@click.option("--peers", "peers", default="1,2,4", show_default=True, help="Peer counts.")
@click.option("--blocks", type=click.IntRange(64), default=5000, show_default=True)
@interleaved_rounds_option(3)
@result_options("sync")
@click.option(
    "--rtt-ms",
    type=click.FloatRange(0),
    default=0.0,
    show_default=True,
    help="0: all on loopback. Else servers and joiner sit at the two ends of an emulated lab "
    "link with this round-trip delay (root; namespaces nd-sync-*, removed on exit).",
)
@click.option(
    "--verify-workers",
    type=click.IntRange(-1),
    default=-1,
    show_default=True,
    help="The joiner's signature-verify processes (-1: one per CPU; 0: on its event loop).",
)
def sync(
    peers: str,
    blocks: int,
    rounds: int,
    rtt_ms: float,
    verify_workers: int,
    out: Path | None,
    as_json: bool,
) -> None:
    """Late-joiner sync throughput from several peers (real node processes).

    sync_s: the joiner's own sync start..finish; wall_s: process start to tip; speed-up and
    fraction of the verify ceiling (the joiner's verify+commit path in process, CPU time, no
    network): medians of per-round ratios."""
    from netdiag.bench import sync as scenario

    counts = _peer_counts(peers)
    err = Console(stderr=True)
    with err.status("sync: starting") as status:
        fig = scenario.run(
            blocks,
            counts,
            rounds,
            rtt_ms,
            progress=lambda m: status.update(f"sync: {m}"),
            verify_workers=verify_workers,
        )
    params = {"peers": counts, "blocks": blocks, "rounds": rounds, "rtt_ms": rtt_ms}
    params["verify_workers"] = verify_workers
    finish(scenario.to_result(fig, params), out, as_json)
