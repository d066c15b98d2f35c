"""`netdiag bench discovery`: a node cluster forming from one bootstrap through Kademlia —
formation time, lookup hops and latency, discovery bytes, and Sybil share of a victim's
outbound peers (docs/benchmarks.md)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from netdiag.bench.p2p_topology import PROFILES
from netdiag.cli.bench import finish, result_options
from netdiag.lab.topology import ENGINES


@click.command()
@click.option("--nodes", type=click.IntRange(2, 200), default=16, show_default=True)
@click.option(
    "--duration",
    type=click.FloatRange(5),
    default=120.0,
    show_default=True,
    help="Seconds of steady state after formation (discovery bytes per minute).",
)
@click.option(
    "--sybils",
    type=click.IntRange(0, 250),
    default=32,
    show_default=True,
    help="Sybil identities on one /24 for the eclipse phase (0: skip it).",
)
@click.option(
    "--refresh",
    "refresh_s",
    type=click.FloatRange(1),
    default=60.0,
    show_default=True,
    help="The nodes' self-lookup and bucket refresh period, seconds (the node's default).",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(10),
    default=300.0,
    show_default=True,
    help="Give up on formation after this many seconds.",
)
@click.option("--tls/--no-tls", default=True, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option(
    "--where",
    type=click.Choice(["auto", "lab", "loopback"]),
    default="auto",
    show_default=True,
    help="lab: one namespace per node on bench p2p's seeded graph with WAN link delays "
    "(needs root); loopback: no delays; auto: the lab where root and namespaces are available.",
)
@click.option(
    "--profile",
    type=click.Choice(sorted(PROFILES)),
    default="clean",
    show_default=True,
    help="The lab links' rate and loss (delays come from the seeded draw).",
)
@click.option(
    "--engine",
    type=click.Choice(ENGINES),
    default="auto",
    show_default=True,
    help="The lab's link engine.",
)
@result_options("discovery")
def discovery(
    nodes: int,
    duration: float,
    sybils: int,
    refresh_s: float,
    timeout_s: float,
    tls: bool,
    seed: int,
    where: str,
    profile: str,
    engine: str,
    out: Path | None,
    as_json: bool,
) -> None:
    """Cluster formation from one bootstrap, lookups against the topology's RTTs, discovery
    bytes and eclipse resistance (real nodes, one /24 each: in a lab by default, or on
    loopback)."""
    from netdiag.bench import discovery as scenario
    from netdiag.errors import CheckFailed

    err = Console(stderr=True)
    params = scenario.Params(
        nodes, duration, sybils, refresh_s, timeout_s, tls, seed, where, profile, engine
    )
    with err.status("discovery: starting") as status:
        result = scenario.run(params, lambda m: status.update(f"discovery: {m.strip()}"))
    doc = finish(result, out, as_json)
    form = doc["summary"]["formation"][0]
    if form["tables_s"] is None or form["connected_s"] is None:
        raise CheckFailed(
            f"the cluster did not form within {timeout_s:g} s (see the result file)",
            "raise --timeout, or keep the node logs with NETDIAG_KEEP_WORK=1 and read them",
        )
