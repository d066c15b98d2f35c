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
@click.option(
    "--lock-db-s",
    type=click.FloatRange(0),
    default=0.0,
    show_default=True,
    help="Hold the joiner's database locked (another connection's exclusive transaction) "
    "this long once its sync has committed a block; its API is timed meanwhile (phase "
    "'locked').",
)
@click.option(
    "--mode",
    "modes",
    default="",
    help="replay,snapshot: compare a joiner replaying from genesis with one starting from a "
    "snapshot (time to synchronized and to backfilled; one row per mode) instead of peer counts.",
)
@click.option(
    "--accounts",
    type=click.IntRange(0),
    default=1000,
    show_default=True,
    help="With --mode: accounts the chain's first blocks create (the state's size).",
)
@click.option(
    "--bad-sources",
    type=click.IntRange(0, 8),
    default=0,
    show_default=True,
    help="With --mode: this many more servers serve every snapshot chunk corrupted (the join "
    "must complete and ban each; the row's `bans`).",
)
@click.option(
    "--chunk-kb",
    type=click.IntRange(1),
    default=256,
    show_default=True,
    help="With --mode: the seeded snapshot's chunk size (KiB).",
)
@click.option(
    "--rate-mbit",
    type=click.FloatRange(0.1),
    default=1000.0,
    show_default=True,
    help="With --rtt-ms: the lab link's rate; --mode rows give the snapshot's bytes at it.",
)
def sync(
    peers: str,
    blocks: int,
    rounds: int,
    rtt_ms: float,
    verify_workers: int,
    lock_db_s: float,
    out: Path | None,
    as_json: bool,
    modes: str,
    accounts: int,
    bad_sources: int,
    chunk_kb: int,
    rate_mbit: float,
) -> None:
    """Late-joiner sync throughput from several peers (real node processes).

    sync_s: the joiner's own sync start..finish; wall_s: process start to tip; speed-up and
    fraction of the verify ceiling (the joiner's verify+commit path in process, CPU time, no
    network): medians of per-round ratios."""
    from netdiag.bench import sync as scenario

    err = Console(stderr=True)
    if modes:
        opts = {"bad_sources": bad_sources, "chunk_bytes": chunk_kb << 10}
        opts["rate_bps"] = int(rate_mbit * 1e6)
        _modes(_mode_list(modes), blocks, accounts, rounds, rtt_ms, opts, out, as_json, err)
        return
    counts = _peer_counts(peers)
    with err.status("sync: starting") as status:
        fig = scenario.run(
            blocks,
            counts,
            rounds,
            rtt_ms,
            progress=lambda m: status.update(f"sync: {m}"),
            verify_workers=verify_workers,
            lock_db_s=lock_db_s,
        )
    params = {"peers": counts, "blocks": blocks, "rounds": rounds, "rtt_ms": rtt_ms}
    params["verify_workers"] = verify_workers
    if lock_db_s:
        params["lock_db_s"] = lock_db_s
    finish(scenario.to_result(fig, params), out, as_json)


def _mode_list(value: str) -> list[str]:
    from netdiag.bench.sync_modes import MODES

    got = [m.strip() for m in value.split(",") if m.strip()]
    if not got or any(m not in MODES for m in got) or len(set(got)) != len(got):
        raise InputError(
            f"--mode {value!r} is not a list of sync modes",
            f"pass distinct modes from {', '.join(MODES)}, e.g. --mode replay,snapshot",
        )
    return got


def _modes(
    modes: list[str],
    blocks: int,
    accounts: int,
    rounds: int,
    rtt_ms: float,
    opts: dict[str, int],
    out: Path | None,
    as_json: bool,
    err: Console,
) -> None:
    from netdiag.bench import sync_modes

    with err.status("sync: starting") as status:
        fig = sync_modes.run(
            blocks,
            modes,
            accounts,
            rounds,
            rtt_ms,
            progress=lambda m: status.update(f"sync: {m}"),
            **opts,
        )
    params: dict[str, object] = {
        "modes": modes,
        "blocks": blocks,
        "accounts": accounts,
        "rounds": rounds,
        "rtt_ms": rtt_ms,
        **opts,
    }
    finish(sync_modes.to_result(fig, params), out, as_json)
