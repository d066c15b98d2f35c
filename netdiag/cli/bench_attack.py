"""`netdiag bench attack`: the issue-12 attacks against a lab cluster of real node processes.

Per attack: survived, chain growth against a control cluster measured side by side, RSS of the
attacked node before/peak/after, and whether the attacker ended up banned — printed, and
saved in the common result format (docs/results-schema.md, benchmark "attack").
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import click
from rich.console import Console, Group
from rich.table import Table

from netdiag.cli.bench import finish, result_options
from netdiag.errors import CheckFailed, InputError

QUICK = {"duration_s": 1.5, "settle_s": 0.5}


def _attack_names(value: str) -> list[str]:
    from netdiag.bench.attack.runner import ATTACKS

    if value == "all":
        return list(ATTACKS)
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in ATTACKS]
    if not names or unknown or len(set(names)) != len(names):
        raise InputError(
            f"--attacks {value!r}: unknown or repeated attack {unknown[:1] or names}",
            f"pass 'all' or distinct names from {', '.join(ATTACKS)} (own modules: --module)",
        )
    return names


def _fmt(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        return f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"  # ratios 0.98, RSS 1685.7
    return str(v)


@click.command("attack")
@click.option("--attacks", default="all", show_default=True, help="Comma list of attacks.")
@click.option(
    "--module",
    "modules",
    multiple=True,
    help="Extra attack: an importable module defining ATTACK (repeatable).",
)
@click.option(
    "--duration",
    type=click.FloatRange(0.5),
    default=30.0,
    show_default=True,
    help="Seconds per attack (the TLS flood runs twice as long).",
)
@click.option(
    "--settle",
    type=click.FloatRange(0),
    default=10.0,
    show_default=True,
    help="Seconds after each attack before RSS 'after' is read.",
)
@click.option("--slot-ms", type=click.IntRange(50, 10_000), default=500, show_default=True)
@click.option("--quick", is_flag=True, help="CI variant: 1.5 s per attack, 0.5 s settle (< 60 s).")
@click.option("--keep", is_flag=True, help="Keep the work directory (node logs, stores).")
@click.option("--fail-undefended", is_flag=True, help="Exit 5 if any attack is not defended.")
@result_options("attack")
def attack(
    attacks: str,
    modules: tuple[str, ...],
    duration: float,
    settle: float,
    slot_ms: int,
    quick: bool,
    keep: bool,
    fail_undefended: bool,
    out: Path | None,
    as_json: bool,
) -> None:
    """Attack a 3-validator loopback cluster; report survival, growth, RSS, bans."""
    from netdiag.bench.attack.runner import Params, load_attack, run

    names = _attack_names(attacks)
    for m in modules:
        load_attack(m)
    names += list(modules)
    if quick:
        duration, settle = QUICK["duration_s"], QUICK["settle_s"]
    err = Console(stderr=True)
    work = Path(tempfile.mkdtemp(prefix="nd-attack-"))
    p = Params(names, duration, settle, slot_ms, 3, quick, work)
    try:
        with err.status("bench attack", spinner="dots") as st:

            def progress(line: str) -> None:
                st.update(f"[bold]bench attack[/] {line}")
                if ": survived=" in line or line.startswith("starting"):
                    err.log(line)

            builder = run(p, progress)
        builder.metadata["workdir"] = str(work) if keep else None
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    doc = finish(builder, out, as_json, table=_tables(builder.to_dict(), slot_ms, duration))
    rows = doc["summary"]["attacks"]
    if fail_undefended and not all(r["defended"] for r in rows):  # None (not run) fails too
        bad = [str(r["attack"]) for r in rows if not r["defended"]]
        raise CheckFailed(f"not defended: {', '.join(bad)}", "see the table and docs/node.md")


def _tables(doc: dict[str, Any], slot_ms: int, duration: float) -> Group:
    """The attacks table, each attack's one-line reason, and the stored chains' verdict."""
    t = Table(title=f"bench attack: 3 validators, {slot_ms} ms slots, {duration:g} s each")
    cols = (
        "attack",
        "survived",
        "defended",
        "attacker_banned",
        "growth_ratio",
        "rss_before_mb",
        "rss_peak_mb",
        "rss_after_mb",
        "tracebacks",
    )
    heads = (
        "attack",
        "alive",
        "defended",
        "banned",
        "growth",
        "RSS MB",
        "peak",
        "after",
        "tracebacks",
    )
    for h in heads:
        t.add_column(h, justify="left" if h == "attack" else "right", no_wrap=True)
    for r in doc["summary"]["attacks"]:
        t.add_row(*(_fmt(r.get(c)) for c in cols))
    lines: list[str] = []
    for r in doc["raw"]["attacks"]:
        lines.append(f"[bold]{r['attack']}[/]: {r['why']}")
        if r.get("not_defended_because"):
            lines.append(f"  not defended: {r['not_defended_because']}")
    chains = doc["summary"].get("chains", [])
    bad = [c for c in chains if not c["chain_valid"]]
    lines.append(
        f"stored chains after the attacks (node verify): {len(chains) - len(bad)} of "
        f"{len(chains)} valid"
        + "".join(f"; {c['node']} bad at {c['bad_height']} ({c['reason']})" for c in bad)
    )
    lines.append("growth: the attacked cluster's new blocks / the control cluster's, same seconds")
    return Group(t, *lines)
