"""`netdiag bench p2p`: thin CLI over netdiag.bench.p2p — options, live progress, summary, file."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click
from rich.console import Console
from rich.live import Live
from rich.text import Text

from netdiag.bench.p2p import P2PBench, P2PParams, Progress
from netdiag.bench.p2p_target import TargetBench, load_target
from netdiag.bench.p2p_topology import PROFILES, SHAPES
from netdiag.errors import InputError, PrivilegeError
from netdiag.output import emit_json


def _cc_list(value: str) -> tuple[str, ...]:
    ccs = tuple(c.strip() for c in value.split(",") if c.strip())
    if not ccs:
        raise InputError("--cc is empty", "e.g. --cc bbr or --cc cubic,bbr")
    if len(set(ccs)) != len(ccs):  # each variant gets its own work dir and summary row
        raise InputError(f"--cc {value!r} names an algorithm twice", "use --rounds N to repeat")
    return ccs


# options that need control of the nodes or their hosts: a deployed target does not give it
LAB_ONLY = (
    "nodes",
    "topology",
    "degree",
    "profile",
    "rate_mbit",
    "loss_pct",
    "slot_ms",
    "cc",
    "rounds",
    "engine",
    "no_tls",
    "kill",
    "partition_s",
    "lossy_link",
    "byzantine",
    "discovery",
    "node_env",
)


def _refuse_lab_options() -> None:
    ctx = click.get_current_context()
    for p in ctx.command.params:
        if p.name in LAB_ONLY and ctx.get_parameter_source(p.name) not in (
            click.core.ParameterSource.DEFAULT,
            None,
        ):
            flag = p.opts[0] if p.opts else p.name
            raise InputError(
                f"{flag} needs control of the nodes and their hosts, which --target does not have",
                "drop it: --target runs the load and propagation phases on the nodes as deployed",
            )


def _progress_line(p: Progress) -> Text:
    left = p.time_left_s()
    parts = [
        f"[{p.variant or '-'}] {p.phase}",
        f"nodes up {p.nodes_up}/{p.nodes_total}",
        f"txs sent {p.txs_sent}",
        f"height {p.height}",
    ]
    if left is not None:
        parts.append(f"{left:4.0f} s left")
    return Text("  ·  ".join(parts), style="cyan")


@click.command("p2p")
@click.option("--nodes", default=16, show_default=True, help="Nodes in the cluster (>= 4).")
@click.option("--topology", type=click.Choice(SHAPES), default="regular", show_default=True)
@click.option("--degree", default=4, show_default=True, help="Links per node.")
@click.option(
    "--profile",
    type=click.Choice(sorted(PROFILES)),
    default="wan",
    show_default=True,
    help="Link profile: wan (100 Mbit/s, 0.1 % loss), lossy-wan (1 %), clean.",
)
@click.option("--rate", "rate_mbit", type=float, help="Override the link rate (Mbit/s).")
@click.option("--loss", "loss_pct", type=float, help="Override the link loss (%).")
@click.option("--tx-rate", default=20.0, show_default=True, help="Transactions/s, whole cluster.")
@click.option(
    "--tx-bytes",
    default=256,
    show_default=True,
    help="Payload bytes per transaction (the node caps a transaction at 16 KiB).",
)
@click.option(
    "--duration", "duration_s", default=30.0, show_default=True, help="Load phase per cc, seconds."
)
@click.option("--slot-ms", default=1000, show_default=True, help="Block slot time.")
@click.option(
    "--cc",
    "cc",
    default="bbr",
    show_default=True,
    help="Congestion controls to run, alternating with the same seed: cubic,bbr.",
)
@click.option(
    "--rounds",
    default=1,
    show_default=True,
    help="Alternate the --cc list this many times (same seed); summaries pool the rounds.",
)
@click.option("--seed", default=1, show_default=True)
@click.option("--engine", type=click.Choice(["auto", "userspace", "kernel"]), default="auto")
@click.option("--no-tls", is_flag=True, help="Run the nodes without TLS.")
@click.option(
    "--kill",
    type=click.IntRange(min=0),
    default=0,
    help="Validators killed with SIGKILL at mid-load.",
)
@click.option(
    "--partition",
    "partition_s",
    type=click.FloatRange(min=0),
    default=0.0,
    help="Cut the cluster in two halves for this many seconds at mid-load.",
)
@click.option("--lossy-link", help="One link with extra loss for the whole run: n01-n02:5%.")
@click.option(
    "--byzantine",
    is_flag=True,
    help="A validator serves forged sync segments (lab-only node hook); the late joiner, "
    "bootstrapped from it, must still sync and ban it.",
)
@click.option(
    "--discovery",
    is_flag=True,
    help="Each node gets one bootstrap peer and finds the rest through Kademlia discovery "
    "(default: the nodes dial their graph neighbours).",
)
@click.option(
    "--node-env",
    "node_env",
    multiple=True,
    metavar="KEY=VALUE",
    help="A node config key for every node (e.g. early_forward=0), as NETDIAG_NODE_<KEY>.",
)
@click.option(
    "--target",
    "target_file",
    type=click.Path(dir_okay=False),
    help="Load and follow an already-deployed cluster listed in this TOML/JSON file (node API "
    "URLs, optional netns) instead of building a lab (docs/deploy.md).",
)
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False),
    help="Result file (default results/p2p-<UTC time>.json).",
)
@click.option(
    "--html", "html_out", type=click.Path(dir_okay=False), help="Also write the HTML report here."
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the result file path and summary as JSON instead of tables.",
)
def bench_p2p(
    nodes: int,
    topology: str,
    degree: int,
    profile: str,
    rate_mbit: float | None,
    loss_pct: float | None,
    tx_rate: float,
    tx_bytes: int,
    duration_s: float,
    slot_ms: int,
    cc: str,
    rounds: int,
    seed: int,
    engine: str,
    no_tls: bool,
    kill: int,
    partition_s: float,
    lossy_link: str | None,
    byzantine: bool,
    discovery: bool,
    node_env: tuple[str, ...],
    target_file: str | None,
    out: str | None,
    html_out: str | None,
    as_json: bool,
) -> None:
    """Load-test a cluster of reference nodes on emulated WAN links (or, with --target, a
    deployed one); save one result file."""
    import os

    targets = load_target(Path(target_file)) if target_file else None
    if targets is not None:
        _refuse_lab_options()
        if any(t.netns for t in targets) and os.geteuid() != 0:
            raise PrivilegeError(
                "--target: entering the nodes' network namespaces needs CAP_SYS_ADMIN",
                "run as root, or list nodes reachable from this namespace (no netns)",
            )
    elif os.geteuid() != 0:
        raise PrivilegeError(
            "bench p2p builds namespaces and links", "run as root (CAP_SYS_ADMIN, CAP_NET_ADMIN)"
        )
    if not 0 <= tx_bytes <= 15 * 1024:
        raise InputError(f"--tx-bytes {tx_bytes} is out of range", "use 0 to 15360")
    pairs = tuple(tuple(x.split("=", 1)) for x in node_env)
    if any(len(p) != 2 or not p[0] for p in pairs):
        raise InputError(
            f"--node-env {node_env!r} is not KEY=VALUE", "e.g. --node-env early_forward=0"
        )
    if rounds < 1:
        raise InputError(f"--rounds {rounds} must be at least 1", "e.g. --rounds 2")
    if tx_rate <= 0 or duration_s <= 0:
        raise InputError("--tx-rate and --duration must be positive", "e.g. --tx-rate 20")
    params = P2PParams(
        nodes=nodes,
        topology=topology,
        degree=degree,
        profile=profile,
        rate_bps=int(rate_mbit * 1e6) if rate_mbit is not None else None,
        loss=loss_pct / 100 if loss_pct is not None else None,
        tx_rate=tx_rate,
        tx_bytes=tx_bytes,
        duration_s=duration_s,
        slot_ms=slot_ms,
        cc=_cc_list(cc),
        rounds=rounds,
        seed=seed,
        engine=engine,
        tls=not no_tls,
        kill=kill,
        partition_s=partition_s,
        lossy_link=lossy_link,
        byzantine=byzantine,
        discovery=discovery,
        node_settings=pairs,  # type: ignore[arg-type]
    )
    console = Console(stderr=True)
    bench: P2PBench | TargetBench
    with Live(
        _progress_line(Progress(nodes_total=len(targets) if targets else nodes)),
        console=console,
        refresh_per_second=4,
        transient=True,
    ) as live:
        show = lambda p: live.update(_progress_line(p))  # noqa: E731
        if targets is not None:
            bench = TargetBench(params, targets, report=show)
        else:
            bench = P2PBench(params, report=show)
        result = bench.run()
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = result.save(Path(out) if out else Path("results") / f"p2p-{stamp}.json")
    from netdiag.report import results as results_mod
    from netdiag.report import tables, terminal

    doc = results_mod.load(path)
    tabs = tables.summary_tables(doc)
    # cubic and bbr compared in one run: say so when the generator offered them different loads
    warnings = tables.load_warnings([("", doc)])
    if as_json:
        emit_json(
            {
                "result": str(path),
                "summary": doc["summary"],
                "notes": doc["metadata"].get("notes", []),
                "warnings": warnings,
            }
        )
    else:
        out_console = Console()
        terminal.print_header(out_console, str(path), doc)
        terminal.print_tables(out_console, tabs)
        for note in doc["metadata"].get("notes", []):
            out_console.print(f"[yellow]note:[/] {note}")
        terminal.print_warnings(out_console, warnings)
        out_console.print(f"result: {path}")
    if html_out:
        from netdiag.report import html, plots

        runs = [("", doc)]
        Path(html_out).parent.mkdir(parents=True, exist_ok=True)
        Path(html_out).write_text(html.page(runs, tabs, plots.render(runs)))
        if not as_json:
            Console().print(f"report: {html_out}")
