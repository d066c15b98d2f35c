"""`netdiag tune`: cc, buffers, limits — planned, journaled, verified, revertible."""

from __future__ import annotations

import sys

import click
from rich.console import Console
from rich.table import Table

from netdiag.errors import CheckFailed, InputError
from netdiag.output import emit_json
from netdiag.tune import apply as tune_apply
from netdiag.tune import plan as tune_plan
from netdiag.tune import profiles, status, verify, workflow
from netdiag.tune.env import TuneEnv
from netdiag.tune.journal import Entry


def _parse_set(values: tuple[str, ...]) -> list[tuple[str, str]]:
    out = []
    for v in values:
        key, sep, val = v.partition("=")
        if not sep or not key.strip():
            raise InputError(
                f"bad --set {v!r}", "write KEY=VALUE, e.g. --set net.core.somaxconn=8192"
            )
        out.append((key.strip(), val.strip()))
    return out


def _plan_table(plan: tune_plan.Plan, title: str) -> Table:
    t = Table(title=title, title_justify="left", show_lines=False)
    for col in ("scope", "setting", "live", "planned", "why"):
        t.add_column(col, overflow="fold")
    for c in plan.changes:
        t.add_row(c.scope, c.target, c.old, c.new, c.reason)
    for scope, key, value in plan.unchanged:
        t.add_row(scope, key, value, "[dim](already)[/dim]", "")
    for scope, key, live, planned, why in plan.advice:
        t.add_row(scope, key, live, f"{planned} [dim](set it yourself)[/dim]", why)
    return t


def _show(env: TuneEnv, as_json: bool, console: Console) -> None:
    state = status.live_state(env)
    if as_json:
        emit_json(state)
        return
    h = Table(title="host transport settings now", title_justify="left")
    h.add_column("sysctl")
    h.add_column("value", overflow="fold")
    for k, v in state["host"].items():
        h.add_row(k, v)
    console.print(h)
    t = Table(title="live tuning by netdiag (journal entries not reverted)", title_justify="left")
    for col in ("entry", "scope", "setting", "set to", "live now"):
        t.add_column(col, overflow="fold")
    for row in state["live"]:
        t.add_row(
            str(row["entry"]),
            str(row["scope"]),
            str(row["target"]),
            str(row["journal_new"]),
            str(row["live"]),
        )
    console.print(t if state["live"] else "no live tuning by netdiag")
    for p in state["sockops_links"]:
        console.print(
            (
                "[red]ORPHAN (no journal record; `netdiag tune --revert` removes it)[/red] "
                if p["orphan"]
                else ""
            )
            + f"sockops link pinned at {p['pin']}: link id {p.get('id')} prog id "
            f"{p.get('prog_id')} cgroup id {p.get('cgroup_id')}"
        )
    j = Table(title=f"journal ({env.state})", title_justify="left")
    for col in ("id", "created", "status", "changes", "command"):
        j.add_column(col, overflow="fold")
    for e in state["journal"]:
        j.add_row(
            str(e["id"]), e["created"], e["status"], str(len(e["changes"])), " ".join(e["argv"])
        )
    console.print(j if state["journal"] else "journal is empty")


@click.command("tune")
@click.option(
    "--cc", metavar="NAME", help="Congestion control (one the kernel lists as available)."
)
@click.option("--netns", metavar="NAME", help="Tune this network namespace instead of the host.")
@click.option(
    "--allow-host",
    is_flag=True,
    help="With --netns: host-wide keys it needs (e.g. the allowed cc list) change the host.",
)
@click.option(
    "--cgroup",
    "cgroup_path",
    metavar="PATH",
    help="cgroup v2 path for a per-connection cc policy (sockops).",
)
@click.option(
    "--port",
    "ports",
    type=int,
    multiple=True,
    metavar="N",
    help="Only connections with this local or remote port (sockops; ≤ 2).",
)
@click.option("--buffers", type=click.Choice(["auto"]), help="Size socket buffers from the BDP.")
@click.option("--bdp", metavar="SIZE", help="Path BDP, e.g. 12.5MB.")
@click.option("--rtt", metavar="DUR", help="Path RTT for the BDP, e.g. 100ms.")
@click.option("--rate", metavar="RATE", help="Path rate for the BDP, e.g. 100mbit.")
@click.option(
    "--peer",
    metavar="HOST:PORT",
    help="Path to measure (BDP for --buffers auto; --verify target). A discard sink.",
)
@click.option("--profile", type=click.Choice(profiles.names()), help="Apply a named profile.")
@click.option("--list-profiles", is_flag=True, help="List profiles with their reasons and exit.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Set any sysctl.")
@click.option("--nofile", type=int, metavar="N", help="Raise RLIMIT_NOFILE (with --pid).")
@click.option("--pid", type=click.IntRange(min=1), metavar="PID", help="Process for --nofile.")
@click.option("--persist", is_flag=True, help="Also write /etc/sysctl.d (removed on revert).")
@click.option("--dry-run", is_flag=True, help="Show the plan and its diff; change nothing.")
@click.option("--show", is_flag=True, help="Show live tuning and the journal.")
@click.option(
    "--revert",
    "revert_id",
    is_flag=False,
    flag_value="all",
    default=None,
    metavar="[ID]",
    help="Revert journal entry ID, or every live entry.",
)
@click.option(
    "--verify", "do_verify", is_flag=True, help="Measure before and after; print a verdict."
)
@click.option("--verify-seconds", type=float, default=5.0, show_default=True)
@click.option(
    "--revert-if-worse", is_flag=True, help="With --verify: revert if the verdict is worse."
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def tune(
    cc: str | None,
    netns: str | None,
    allow_host: bool,
    cgroup_path: str | None,
    ports: tuple[int, ...],
    buffers: str | None,
    bdp: str | None,
    rtt: str | None,
    rate: str | None,
    peer: str | None,
    profile: str | None,
    list_profiles: bool,
    sets: tuple[str, ...],
    nofile: int | None,
    pid: int | None,
    persist: bool,
    dry_run: bool,
    show: bool,
    revert_id: str | None,
    do_verify: bool,
    verify_seconds: float,
    revert_if_worse: bool,
    as_json: bool,
) -> None:
    """Plan, diff and apply transport tuning; every change is journaled and revertible.

    \b
    netdiag tune --cc bbr                       host default congestion control
    netdiag tune --cc bbr --port 9000           only the P2P port (sockops, cgroup v2)
    netdiag tune --buffers auto --rtt 100ms --rate 1gbit --dry-run
    netdiag tune --profile p2p-wan --persist
    netdiag tune --show     |     netdiag tune --revert [ID]
    """
    env = TuneEnv.from_environ()
    console = Console(stderr=as_json, width=None if sys.stdout.isatty() else 100)
    if list_profiles:
        return _list_profiles(as_json, console)
    if show:
        return _show(env, as_json, console)
    if revert_id is not None:
        return _revert(env, None if revert_id == "all" else _int_id(revert_id), as_json, console)
    req = tune_plan.Request(
        cc=cc,
        netns=netns,
        cgroup=cgroup_path,
        ports=list(ports),
        buffers=buffers,
        bdp=bdp,
        rtt=rtt,
        rate=rate,
        profile=profile,
        sets=_parse_set(sets),
        nofile=nofile,
        pid=pid,
        persist=persist,
        allow_host=allow_host,
    )
    opts = workflow.Options(
        peer=peer,
        dry_run=dry_run,
        verify=do_verify,
        verify_seconds=verify_seconds,
        revert_if_worse=revert_if_worse,
    )

    def planned(plan: tune_plan.Plan) -> None:
        if as_json:
            return
        console.print(
            _plan_table(plan, "tune plan" + (" (dry run: nothing changes)" if dry_run else ""))
        )
        for n in plan.notes:
            console.print(f"• {n}")
        if not plan.changes and plan.advice:
            console.print("nothing for netdiag to change: the advice above is yours to apply")
        elif not plan.changes:
            console.print("nothing to change: every planned value is already live")

    def applied(entry: Entry) -> None:
        if not as_json:
            console.print(
                f"applied {len(entry.changes)} change(s); journal entry {entry.id} — "
                f"undo with `netdiag tune --revert {entry.id}`"
            )

    argv = ["netdiag", *sys.argv[1:]] if sys.argv else []
    result = workflow.run(req, env, opts, argv, on_plan=planned, on_applied=applied)
    if result.verdict is not None and not as_json:
        console.print(_verdict_table(result.verdict))
    if as_json:
        emit_json(result.to_json())
    failure = result.failure()
    if failure is not None:
        raise failure


def _int_id(text: str) -> int:
    if not text.isdigit():
        raise InputError(f"bad journal id {text!r}", "see ids with `netdiag tune --show`")
    return int(text)


def _verdict_table(v: verify.Verdict) -> Table:
    t = Table(title=f"verify: {v.verdict}", title_justify="left", caption=v.why)
    for col in ("", "before", "after"):
        t.add_column(col, justify="right")
    b, a = v.before, v.after
    rows = [
        ("cc", b.cc, a.cc),
        ("throughput Mbit/s", f"{b.throughput_bps / 1e6:.1f}", f"{a.throughput_bps / 1e6:.1f}"),
        ("rtt ms", f"{b.rtt_us / 1e3:.2f}", f"{a.rtt_us / 1e3:.2f}"),
        ("retrans segs", str(b.retrans_segs), str(a.retrans_segs)),
    ]
    for name in ("rwnd_limited_us", "sndbuf_limited_us", "cwnd_limited_us"):
        rows.append(
            (
                name.replace("_us", " %"),
                _pct(getattr(b, name), b.busy_us),
                _pct(getattr(a, name), a.busy_us),
            )
        )
    for r in rows:
        t.add_row(*r)
    return t


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f}" if whole else "-"


def _revert(env: TuneEnv, entry_id: int | None, as_json: bool, console: Console) -> None:
    results = tune_apply.revert(env, entry_id)
    if as_json:
        emit_json(
            [
                {
                    "entry": r.entry.id,
                    "status": r.entry.status,
                    "notes": r.notes,
                    "problems": r.problems,
                }
                for r in results
            ]
        )
    else:
        if not results:
            console.print("nothing to revert: no live netdiag tuning")
        for r in results:
            if r.entry.id == 0:  # orphan pins found after the entries (see apply.revert)
                console.print("sockops links without a journal record:")
            else:
                console.print(
                    f"entry {r.entry.id}: {r.entry.status} ({len(r.entry.changes)} change(s))"
                )
            for n in r.notes:
                console.print(f"  • {n}")
            for p in r.problems:
                console.print(f"  ✗ {p}")
    bad = [r for r in results if r.problems]
    if bad:
        raise CheckFailed(
            f"revert incomplete for entries {[r.entry.id for r in bad]}",
            "fix the problems listed and run `netdiag tune --revert` again",
        )


def _list_profiles(as_json: bool, console: Console) -> None:
    profs = [profiles.load(n) for n in profiles.names()]
    if as_json:
        emit_json(
            [
                {
                    "name": p.name,
                    "description": p.description,
                    "cc": p.cc.value if p.cc else None,
                    "buffers": {"rtt": p.buffers_rtt, "rate": p.buffers_rate},
                    "sysctl": {k: s.value for k, s in p.sysctls.items()},
                }
                for p in profs
            ]
        )
        return
    for p in profs:
        console.print(f"[bold]{p.name}[/bold] — {p.description}")
        if p.cc:
            console.print(f"  cc {p.cc.value}: {p.cc.reason}")
        if p.buffers_rtt:
            console.print(f"  buffers for {p.buffers_rtt} × {p.buffers_rate}: {p.buffers_reason}")
        for k, s in p.sysctls.items():
            console.print(f"  {k} = {s.value}: {s.reason}")
