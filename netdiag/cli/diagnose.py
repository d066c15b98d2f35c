"""`netdiag diagnose`: what limits every peer connection (and the host), with evidence and fix."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from netdiag.diagnose import SEVERITY_RANK
from netdiag.diagnose.collect import Selection, parse_peer
from netdiag.diagnose.run import Report, run
from netdiag.errors import ExitStatus, InputError
from netdiag.output import console, emit_json
from netdiag.tune.buffers import parse_rate_bps

SEVERITY_STYLE = {"info": "dim", "warn": "yellow", "error": "bold red"}


def parse_window(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise InputError(f"--window {text!r} is not a number", "e.g. --window 3") from None
    if not v > 0 or v > 3600:
        raise InputError(f"--window {text} must be > 0 and ≤ 3600 seconds", "e.g. --window 3")
    return v


@click.command("diagnose")
@click.option("--port", "ports", multiple=True, type=int, help="Only sockets with this port.")
@click.option("--peer", help="Only connections to ADDR, ADDR:PORT or [V6ADDR]:PORT.")
@click.option("--pid", "pids", multiple=True, type=int, help="Only sockets this process holds.")
@click.option("--netns", "netns_name", help="Sockets of this named network namespace.")
@click.option(
    "--cgroup",
    type=click.Path(path_type=Path),
    help="Only sockets of this cgroup v2 directory (and its children).",
)
@click.option("--node", "node_url", help="The node's REST API: label rows with peer ids.")
@click.option("--window", "window_text", default="3", show_default=True, help="Seconds to watch.")
@click.option("--rate", "rate_text", help="The path's known bottleneck rate, e.g. 50mbit.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@click.option(
    "--fail-on",
    type=click.Choice(["warn", "error"]),
    help="Exit 5 when a finding reaches this severity (for cron and CI).",
)
@click.option(
    "--no-bpf", is_flag=True, help="Judge from sock_diag only: no tracepoint event evidence."
)
def diagnose(
    ports: tuple[int, ...],
    peer: str | None,
    pids: tuple[int, ...],
    netns_name: str | None,
    cgroup: Path | None,
    node_url: str | None,
    window_text: str,
    rate_text: str | None,
    as_json: bool,
    fail_on: str | None,
    no_bpf: bool,
) -> int:
    """Judge every TCP connection over a window: the limit, its evidence, the fix."""
    window = parse_window(window_text)
    rate = parse_rate_bps(rate_text) if rate_text else None
    if rate is not None and rate <= 0:
        raise InputError("--rate must be > 0", "e.g. --rate 50mbit")
    sel = Selection(
        ports=ports,
        peer=parse_peer(peer) if peer else None,
        pids=pids,
        cgroup=cgroup,
        netns=netns_name,
    )
    sel.validate()
    err = Console(stderr=True)
    if err.is_terminal and not as_json:
        with err.status(f"watching for {window:g} s …"):
            report = run(sel, window, rate_bps=rate, node_url=node_url, use_bpf=not no_bpf)
    else:
        report = run(sel, window, rate_bps=rate, node_url=node_url, use_bpf=not no_bpf)
    if as_json:
        emit_json(report.to_json())
    else:
        print_report(report)
    if fail_on and any(
        SEVERITY_RANK[f.severity] >= SEVERITY_RANK[fail_on] for f in report.findings
    ):
        return ExitStatus.CHECK_FAILED
    return ExitStatus.OK


def print_report(report: Report) -> None:
    out = console()
    if not report.findings:
        out.print(
            f"no TCP connections or listeners match (watched {report.window_s:.1f} s"
            f"{' in netns ' + report.netns if report.netns else ''})"
        )
        return
    t = Table(box=None, header_style="bold", expand=False)
    for col in ("SEV", "SCOPE", "SUBJECT", "VERDICT", "CONF"):
        t.add_column(col, no_wrap=col != "SUBJECT")
    for f in report.findings:
        subject = f.subject
        if f.labels.get("peer_id"):
            subject = f"{str(f.labels['peer_id'])[:10]} {subject}"
        t.add_row(
            f"[{SEVERITY_STYLE[f.severity]}]{f.severity}[/]",
            f.scope,
            subject,
            f.verdict,
            f"{f.confidence:.2f}",
        )
    out.print(t)
    out.print()
    for f in report.findings:
        if f.scope == "connection" and f.verdict == "idle":
            continue
        out.print(f"[{SEVERITY_STYLE[f.severity]}]{f.subject}[/]: {f.summary}")
        if f.fix:
            out.print(f"  fix: {f.fix}")
    idle = sum(1 for f in report.findings if f.verdict == "idle")
    tail = f"{report.connections} connections, {report.listeners} listeners"
    if idle:
        tail += f" ({idle} idle)"
    if report.node:
        n = report.node
        tail += (
            f"; node height {n.get('height')}, sync distance {n.get('sync_distance')}, "
            f"mesh degree {n.get('mesh_degree')}"
        )
    out.print(f"[dim]{tail}; watched {report.window_s:.1f} s[/dim]")
