"""`netdiag lab …`: namespaces joined by emulated WAN links; `netdiag bench emulator`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from netdiag.errors import ExitStatus, InputError, NetdiagError, PrivilegeError
from netdiag.lab import state, teardown, units
from netdiag.output import emit_json

ERROR_PREFIX = "netdiag: error: "


class _Terminated(Exception):
    """SIGTERM (from `lab down NAME`) turned into an exception so teardown runs in finally."""


def _on_term(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one teardown; a second TERM must not cut it
    raise _Terminated()


def _resolve(name: str | None) -> str:
    names = state.names()
    if name:
        if name not in names:
            raise InputError(
                f"no lab named {name!r} is up", f"labs up: {', '.join(names) or 'none'}"
            )
        return name
    if len(names) == 1:
        return names[0]
    if not names:
        raise InputError("no lab is up", "start one with `netdiag lab up FILE`")
    raise InputError(f"several labs are up ({', '.join(names)})", "choose one with --lab NAME")


@click.group()
def lab() -> None:
    """Namespaces joined by emulated WAN links (delay, jitter, rate, loss, queue)."""


@lab.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--engine",
    type=click.Choice(["auto", "userspace", "kernel"]),
    default=None,
    help="Link engine (default: the topology's, else auto: kernel if netem loads).",
)
@click.option(
    "--name", default=None, help="Lab name (default: the topology's `name`, else the file stem)."
)
@click.option("-d", "--detach", is_flag=True, help="Run the supervisor in the background.")
@click.option("--json", "as_json", is_flag=True, help="Print the lab's metadata as JSON when up.")
@click.option(
    "--no-calibrate",
    is_flag=True,
    help="Do not measure and subtract each link's own latency (the residual is then unknown).",
)
def up(
    file: Path,
    engine: str | None,
    name: str | None,
    detach: bool,
    as_json: bool,
    no_calibrate: bool,
) -> None:
    """Bring up the lab described by FILE; runs until Ctrl-C (or `lab down`), then tears down."""
    from dataclasses import replace

    from netdiag.lab import Lab, load
    from netdiag.lab.topology import validate

    topo = load(file)
    if name:
        topo = replace(topo, name=name)
        validate(topo)  # the name becomes paths and namespace names: check it before anything
    if detach:
        _detach(file, engine or topo.engine, topo.name, as_json, not no_calibrate)
        return
    console = Console(stderr=True)
    old = signal.signal(signal.SIGTERM, _on_term)
    # Ctrl-C ends a foreground lab even when netdiag was started with SIGINT ignored (a
    # background job of a non-interactive shell): Python then installs no KeyboardInterrupt.
    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with Lab.up(topo, engine=engine, calibrate=not no_calibrate) as the_lab:
            if as_json:
                emit_json(the_lab.metadata())
                sys.stdout.flush()
            else:
                console.print(_summary(the_lab.metadata(), the_lab.pending_roles))
                procs = [p for p in the_lab.processes if p.kind == "node"]
                if procs:
                    logs = procs[0].log.parent if procs[0].log else "-"
                    console.print(
                        f"{len(procs)} supervised node processes "
                        f"({', '.join(p.node for p in procs)}); logs in {logs}"
                    )
                console.print(
                    f"lab [bold]{topo.name}[/] is up — Ctrl-C or "
                    f"`netdiag lab down {topo.name}` ends it"
                )
            while True:
                for a, b, code in the_lab.dead_links():
                    console.print(
                        f"[red]link {a} ↔ {b}: forwarder exited with {code} — the link is down; "
                        f"its log: {state.work_dir(topo.name)}[/]"
                    )
                for s in the_lab.crashed():
                    console.print(
                        f"[red]node {s.node}: {' '.join(s.argv)} exited with {s.proc.returncode}[/]"
                        + (f"\n{s.tail()}" if s.tail() else "")
                    )
                time.sleep(0.5)
    except _Terminated:
        pass
    finally:
        signal.signal(signal.SIGTERM, old)
        signal.signal(signal.SIGINT, old_int)


def _detach(file: Path, engine: str | None, name: str, as_json: bool, calibrate: bool) -> None:
    from netdiag.kernel import caps
    from netdiag.lab import engines

    # the checks the supervisor would make, made here first: a refusal is one line with its
    # own exit code, nothing is written, and a running lab's supervisor log is never truncated
    caps.require("CAP_SYS_ADMIN", "CAP_NET_ADMIN", why="building a lab (namespaces, links)")
    state.refuse_running(name)
    engines.choose(engine or "auto")
    from netdiag.lab import load
    from netdiag.lab.engines import veth

    veth.check_topology(load(file))  # a veth link with delay and no netem
    log = state.work_dir(name) / "supervisor.log"
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
    except PermissionError as e:
        raise PrivilegeError(
            f"cannot write the lab state under {state.labs_dir()}: {e.strerror}",
            "run as root, or point NETDIAG_STATE at a directory you own",
        ) from e
    argv = [
        sys.executable,
        "-m",
        "netdiag.cli.main",
        "lab",
        "up",
        str(file),
        "--name",
        name,
        "--json",
    ]
    if engine:
        argv += ["--engine", engine]
    if not calibrate:
        argv.append("--no-calibrate")
    with open(log, "wb") as f:
        p = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        rec = state.read(name)
        if rec and rec.get("ready") and rec.get("supervisor", {}).get("pid") == p.pid:
            if as_json:
                emit_json(_status_of(rec))
            else:
                click.echo(f"lab {name} is up (supervisor pid {p.pid}, log {log})")
            return
        if p.poll() is not None:
            raise _supervisor_error(name, p.returncode, log)
        time.sleep(0.1)
    teardown.down(name)
    raise NetdiagError(f"lab {name} did not come up within 120 s", f"see {log}")


def _supervisor_error(name: str, code: int, log: Path) -> NetdiagError:
    """The background supervisor's own one-line error, with its exit code: said once."""
    lines = log.read_text(errors="replace").splitlines()
    said = [ln.removeprefix(ERROR_PREFIX) for ln in lines if ln.startswith(ERROR_PREFIX)]
    what, _, fix = (said[-1] if said else f"lab {name} failed to start").partition(" — ")
    err = NetdiagError(what, f"{fix + '; ' if fix else ''}supervisor log: {log}")
    codes = {int(s) for s in ExitStatus}
    err.exit_code = ExitStatus(code) if code in codes else ExitStatus.FAILED
    return err


@lab.command()
@click.argument("name", required=False)
@click.option("--all", "all_", is_flag=True, help="Every lab recorded in the state directory.")
@click.option(
    "--stale",
    is_flag=True,
    help="Only labs whose supervisor is gone (after kill -9); live labs stay.",
)
@click.option("--json", "as_json", is_flag=True)
def down(name: str | None, all_: bool, stale: bool, as_json: bool) -> None:
    """Stop lab NAME (or --all / --stale): what it recorded is removed; works after kill -9."""
    if (all_ or stale) == bool(name) or (all_ and stale):
        raise click.UsageError("give a lab NAME, --all or --stale")
    if all_ or stale:
        done = teardown.down_all(stale_only=stale)
    else:
        r = teardown.down(name or "")
        if r is None:
            raise InputError(
                f"no lab named {name!r} is up", f"labs up: {', '.join(state.names()) or 'none'}"
            )
        done = [r]
    if as_json:
        emit_json(done)
    else:
        for d in done:
            click.echo(f"lab {d['lab']}: down ({len(d.get('namespaces', []))} namespaces removed)")
        if not done:
            click.echo("no labs were up")


def _status_of(rec: dict[str, Any]) -> dict[str, Any]:
    from netdiag.lab import engines

    sup = rec.get("supervisor") or {}
    known = rec.get("engine") in ("userspace", "kernel")
    return {
        "lab": rec["name"],
        "engine": rec.get("engine"),
        "ready": bool(rec.get("ready")),
        "supervisor_pid": sup.get("pid"),
        "supervisor_alive": bool(sup) and state.alive(sup),
        "nodes": rec.get("nodes", {}),
        "pending_roles": rec.get("pending_roles", []),
        "links": [
            {
                "a": ln["a"],
                "b": ln["b"],
                "kind": ln.get("kind", "emulated"),
                **ln.get("shape", {}),
                "calibration": ln.get("calibration"),
                "forwarder_alive": state.alive(ln) if "pid" in ln else None,
                "stats": engines.for_link(rec["engine"], ln.get("kind")).stats(ln) if known else {},
            }
            for ln in rec.get("links", [])
        ],
        "processes": [
            {
                "node": p.get("node"),
                "kind": p["kind"],
                "pid": p["pid"],
                "argv": p.get("argv"),
                "alive": state.alive(p),
                "log": p.get("log"),
            }
            for p in rec.get("procs", [])
        ],
    }


@lab.command()
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True)
def status(name: str | None, as_json: bool) -> None:
    """Labs that are up: engine, supervisor, links with their shape and counters, processes."""
    if name is not None and state.read(name) is None:
        raise InputError(
            f"no lab named {name!r} is up", f"labs up: {', '.join(state.names()) or 'none'}"
        )
    names = [name] if name else state.names()
    out = [_status_of(r) for n in names if (r := state.read(n))]
    if as_json:
        emit_json(out)
        return
    console = Console()
    if not out:
        console.print("no labs are up")
    for s in out:
        alive = "alive" if s["supervisor_alive"] else "[red]DEAD — run `netdiag lab down --all`[/]"
        console.print(
            f"[bold]{s['lab']}[/] engine {s['engine']} supervisor {s['supervisor_pid']} {alive}"
        )
        console.print(_summary({"links": s["links"]}, s["pending_roles"]))
        for p in s["processes"]:
            if p["kind"] == "node":
                st = "running" if p["alive"] else "[red]exited[/]"
                console.print(
                    f"  node {p['node']}: {' '.join(p['argv'] or [])} — {st} (log {p['log']})"
                )


def _summary(meta: dict[str, Any], pending: list[str]) -> Table:
    t = Table(show_edge=False, pad_edge=False)
    cols = (
        "link",
        "delay",
        "jitter",
        "rate",
        "loss",
        "queue",
        "residual",
        "a→b pkts",
        "drops loss/queue",
    )
    for col in cols:
        t.add_column(col)
    for ln in meta.get("links", []):
        st = ln.get("stats", {}).get("ab", {})
        t.add_row(
            f"{ln['a']} ↔ {ln['b']}",
            units.fmt_duration(ln["delay_us"] / 1e6),
            units.fmt_duration(ln["jitter_us"] / 1e6),
            units.fmt_rate(ln["rate_bps"]),
            f"{ln['loss'] * 100:g}%",
            str(ln["queue_pkts"]),
            _residual(ln.get("calibration")),
            str(st.get("tx_pkts", "")),
            f"{st['drop_loss']}/{st['drop_queue']}" if st else "",
        )
    notes = [
        "residual: RTT error left after subtracting the link's own latency, measured by ping "
        "across the link (goal ±0.1 ms + 0.5 %; * measured before the last `link set`)"
    ]
    if not any(ln.get("calibration") for ln in meta.get("links", [])):
        notes = []
    if pending:
        notes.append(f"role=node pending (netdiag node not available yet): {', '.join(pending)}")
    t.caption = "\n".join(notes) or None
    return t


def _residual(cal: dict[str, Any] | None) -> str:
    """`+0.031ms ✓` (within the goal), `✗` when not; `-` uncalibrated (veth, --no-calibrate)."""
    if not cal:
        return "-"
    if "residual_us" not in cal:
        return "[red]unmeasured[/]"
    mark = "✓" if cal["ok"] else "[red]✗[/]"
    return f"{cal['residual_us'] / 1e3:+.3f}ms {mark}" + ("*" if cal.get("stale") else "")


@lab.command(name="exec", context_settings={"ignore_unknown_options": True})
@click.option("--lab", "lab_name", default=None, help="Which lab (default: the only one up).")
@click.argument("node")
@click.argument("cmd", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_(lab_name: str | None, node: str, cmd: tuple[str, ...]) -> None:
    """Run CMD inside NODE's namespace: `netdiag lab exec a -- ping 10.0.0.2`."""
    name = _resolve(lab_name)
    rec = state.read(name) or {}
    nodes = rec.get("nodes", {})
    if node not in nodes:
        raise InputError(f"lab {name} has no node {node!r}", f"nodes: {', '.join(nodes)}")
    sys.stdout.flush()
    os.execvp("ip", ["ip", "netns", "exec", nodes[node]["ns"], *cmd])


@lab.group()
def link() -> None:
    """Change live links."""


@link.command(name="set")
@click.argument("a")
@click.argument("b")
@click.option("--lab", "lab_name", default=None, help="Which lab (default: the only one up).")
@click.option("--delay", default=None, help='Round-trip delay the link adds, e.g. "50ms".')
@click.option("--jitter", default=None, help='Per-direction +- jitter, e.g. "1ms".')
@click.option("--rate", default=None, help='e.g. "100mbit"; 0 = unlimited.')
@click.option("--loss", default=None, help='Per direction, e.g. "1%".')
@click.option("--queue", default=None, help='Packets, or BDP multiples like "2bdp".')
@click.option(
    "--no-calibrate",
    is_flag=True,
    help="Keep the link's previous correction (e.g. while it carries traffic).",
)
@click.option("--json", "as_json", is_flag=True)
def link_set(
    a: str,
    b: str,
    lab_name: str | None,
    delay: str | None,
    jitter: str | None,
    rate: str | None,
    loss: str | None,
    queue: str | None,
    no_calibrate: bool,
    as_json: bool,
) -> None:
    """Change the live link between nodes A and B (only the shape fields given); its own
    latency is measured again and subtracted when delay, jitter or rate changed."""
    from netdiag.lab import calibrate
    from netdiag.lab.live import link_index, update_link

    name = _resolve(lab_name)
    shape, mtu = update_link(
        name,
        a,
        b,
        delay_s=units.duration_s(delay, "--delay") if delay is not None else None,
        jitter_s=units.duration_s(jitter, "--jitter") if jitter is not None else None,
        rate_bps=units.rate_bps(rate, "--rate") if rate is not None else None,
        loss=units.loss_fraction(loss, "--loss") if loss is not None else None,
        queue=units.queue_spec(queue, "--queue") if queue is not None else None,
    )
    cal = None
    rec = state.read(name) or {}
    i = link_index(rec, a, b)
    timing = delay is not None or jitter is not None or rate is not None
    if not no_calibrate and timing and rec["links"][i].get("calibration"):
        cal = calibrate.run(name, None, [i]).get(i)
    if as_json:
        emit_json({"lab": name, "a": a, "b": b, **shape.as_dict(mtu), "calibration": cal})
    else:
        click.echo(f"{name}: {a} ↔ {b}: {shape.describe()}")
        if cal and "residual_us" in cal:
            click.echo(
                f"  calibrated: own latency {cal['overhead_us'] / 1e3:+.3f} ms subtracted, "
                f"residual {cal['residual_us'] / 1e3:+.3f} ms"
            )
