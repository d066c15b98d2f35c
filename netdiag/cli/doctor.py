"""`netdiag doctor`: which netdiag features work on this host, and how to fix the rest."""

from __future__ import annotations

import os
import shutil
import subprocess

import click
from rich.console import Console
from rich.table import Table

from netdiag import __version__
from netdiag.errors import CheckFailed, NetdiagError
from netdiag.kernel import bcc_loader, caps, checks, checks_bpf, tracefs
from netdiag.output import emit_json

STYLE = {"ok": "green", "degraded": "yellow", "missing": "red"}
# the probe behind `trace-peers`: its hooks are core, the others' are optional
CORE_PROBE = "tcp_peers"


def hooks_from_manifests() -> dict[str, checks.HookNeed]:
    """The tracepoints the probe catalog hooks (probes/*.toml is the single source)."""
    from netdiag.trace import manifest

    merged: dict[str, tuple[list[str], bool, set[str]]] = {}
    for probe in manifest.catalog():
        for h in probe.hooks:
            uses, core, args = merged.setdefault(h.tracepoint, ([], False, set()))
            uses.append(probe.name)
            merged[h.tracepoint] = (uses, core or probe.name == CORE_PROBE, args | set(h.args))
    return {
        tp: checks.HookNeed(f"probes: {', '.join(uses)}", core, tuple(sorted(args)))
        for tp, (uses, core, args) in merged.items()
    }


def hook_check() -> checks.Check:
    """Which hook tcp_peers' per-ACK event will use here (trace/btfhook.py), and why."""
    from netdiag.kernel.bcc_loader import LoadEnv
    from netdiag.trace import btfhook, loaders, manifest

    spec = manifest.load(CORE_PROBE).btf_hook
    facts = btfhook.facts_for(spec, LoadEnv())
    try:
        loader = loaders.chosen()
    except NetdiagError as e:
        loader = f"unknown ({e})"
    choice = btfhook.choose(spec, "auto", loader, facts)
    default = "tracepoint tcp:tcp_probe (classic) by default"
    enables = "trace-peers --hook tp_btf (BTF raw tracepoint, no trace record)"
    if choice.hook == btfhook.TP_BTF:
        return checks.Check(
            "tcp_probe hook", "ok", f"{default}; tp_btf/tcp_probe available", enables
        )
    return checks.Check(
        "tcp_probe hook",
        "ok",
        f"{default}; tp_btf unavailable: {choice.reason}",
        enables,
    )


def _apply_fixes(found: list[checks.Check], console: Console) -> None:
    """The safe fixes: mount tracefs, install a kernel header tree for bcc."""
    by_name = {c.name: c for c in found}
    if by_name["tracefs"].status != "ok":
        mp = tracefs.ensure()
        console.print(f"fixed: mounted tracefs at {mp}")
    if by_name["kernel headers"].status == "missing" and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        try:
            arch = subprocess.run(
                ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
            ).stdout.strip()
            console.print(f"fixing: apt-get install linux-headers-{arch}")
            for argv in (
                ["apt-get", "update", "-q"],
                [
                    "apt-get",
                    "install",
                    "-y",
                    "-q",
                    "--no-install-recommends",
                    f"linux-headers-{arch}",
                ],
            ):
                subprocess.run(argv, check=True, env=env, capture_output=True, text=True)
        except subprocess.CalledProcessError as e:
            last = (e.stderr or "").strip().splitlines()[-1:] or ["no output"]
            raise NetdiagError(
                f"installing kernel headers failed: `{' '.join(e.cmd)}`: {last[0]}",
                "run it by hand as root; the package registry must be reachable",
            ) from e


def _table(found: list[checks.Check]) -> Table:
    t = Table(title="netdiag doctor", title_justify="left", expand=False)
    t.add_column("status", no_wrap=True)
    t.add_column("check", no_wrap=True)
    t.add_column("detail", max_width=44)
    t.add_column("enables", max_width=30)
    for c in found:
        mark = c.status + ("*" if c.core else "")
        t.add_row(f"[{STYLE[c.status]}]{mark}[/]", c.name, c.detail, c.enables)
    return t


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object with every check.")
@click.option("--fix", is_flag=True, help="Apply the safe fixes (mount tracefs, install headers).")
@click.option(
    "--ebpf", is_flag=True, hidden=True, help="Print the final C of the self-test program."
)
def doctor(as_json: bool, fix: bool, ebpf: bool) -> None:
    """Check what this kernel can do for netdiag; exit 0 when the core features work.

    Each row: status (ok / degraded / missing; * marks what netdiag's core needs), the check,
    what it found, and the netdiag features it enables. Rows that are not ok list their fix.
    """
    if ebpf:
        click.echo(bcc_loader.render(bcc_loader.bpf_source("selftest"), {}))
        return
    console = Console(width=100 if not os.environ.get("COLUMNS") else None)
    ctx = checks.Context(
        privileged=caps.has("CAP_SYS_ADMIN") and caps.has("CAP_NET_ADMIN"),
        hooks=hooks_from_manifests(),
    )
    found = [*checks.run_all(ctx), hook_check()]
    if fix:
        _apply_fixes(found, console)
        found = [*checks.run_all(ctx), hook_check()]
    ok = checks.core_ok(found)
    if as_json:
        emit_json(
            {
                "netdiag_version": __version__,
                "kernel": checks_bpf.kernel_version(ctx).detail,
                "core_ok": ok,
                "checks": [c.to_json() for c in found],
            }
        )
    else:
        console.print(_table(found))
        todo = [c for c in found if c.status != "ok" and c.fix]
        if todo:
            console.print("\n[bold]To fix[/] (* = needed by netdiag's core):")
            for c in todo:
                console.print(f"  {c.name}{'*' if c.core else ''}: {c.fix}")
        console.print("\ncore features: " + ("[green]ready[/]" if ok else "[red]NOT ready[/]"))
    if not ok:
        missing = checks.core_missing(found)
        raise CheckFailed(
            "core features unavailable: " + ", ".join(c.name for c in missing),
            checks.core_fix(missing),
        )
