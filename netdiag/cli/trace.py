"""`netdiag trace-peers` (per-peer TCP truth from the kernel) and `netdiag probes` (the catalog)."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any

import click
from rich.console import Console

from netdiag.errors import InputError, KernelFeatureError
from netdiag.kernel import cgroup as kcgroup
from netdiag.output import console, emit_json
from netdiag.trace import engine, manifest, nodejoin, output, peers, prom
from netdiag.trace.filters import Filters
from netdiag.trace.membership import netns_of_pids
from netdiag.trace.overhead import Overhead
from netdiag.trace.peers import PEERS_PROBE
from netdiag.trace.pipeline import Pipeline, age_stage, row_filter, sort_stage

TITLE = "netdiag trace-peers"
View = output.View  # the live table's sort state (tests drive it)


def row_columns(probe: manifest.Probe) -> set[str]:
    """Every column a trace-peers row can have: the probe's fields and what is derived or
    joined from them."""
    out = {f.name for f in probe.fields} | {f.rate for f in probe.fields if f.rate}
    out |= {d[0] for d in probe.derived} | {"peer", "age_s", "min_rtt_us", "cc", "verdict"}
    out |= {"accept_queue", "accept_backlog", "listen_drops"}  # --listen
    out |= {"ca_state", "recovery_ms", "loss_ms", "recoveries"}  # --cong
    out |= {
        f"{f.name.removesuffix('_hist')}_{q}_{f.unit}"
        for f in probe.fields
        if f.type == "log2_hist"
        for q in ("p50", "p90", "p99")
    }
    return out | set(nodejoin.LABELS)


def default_columns(probe: manifest.Probe) -> list[str]:
    """The probe's columns, with MINRTT from the kernel's raw minimum RTT (sock_diag, joined
    by cookie) in place of the minimum of the smoothed RTT, and the verdict engine's VERDICT
    in place of ssthresh (which stays in --json and --columns)."""
    cols = ["min_rtt_us" if c == "srtt_min_us" else c for c in probe.output.default_columns]
    return [c for c in cols if c != "ssthresh"] + ["verdict"]


# with --node the node's labels lead; state, p90, ssthresh and age make room for them and the
# verdict (all stay in --json)
NODE_COLUMNS = (
    "peer_id",
    "mesh",
    "peer",
    "min_rtt_us",
    "srtt_us",
    "snd_cwnd",
    "acked_bps",
    "retrans",
    "verdict",
)


def _ports(values: tuple[str, ...]) -> tuple[int, ...]:
    out: list[int] = []
    for v in values:
        for part in v.split(","):
            part = part.strip()
            if not part:
                continue
            if not part.isdigit():
                raise InputError(
                    f"--port {part!r} is not a number", "e.g. --port 30303 or --port 80,443"
                )
            out.append(int(part))
    return tuple(out)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so `finally` blocks detach the probe."""

    def handler(_sig: int, _frm: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _check_times(interval: float, first_read: float) -> None:
    if interval <= 0:
        raise InputError(f"--interval {interval} must be > 0", "e.g. --interval 1")
    if first_read < 0:
        raise InputError(f"--first-read {first_read} must be >= 0", "e.g. --first-read 0.25")


def _filters(
    ports: tuple[str, ...], pids: tuple[int, ...], cg: str | None, netns_name: str | None
) -> Filters:
    path = kcgroup.resolve(cg) if cg else None
    flt = Filters(ports=_ports(ports), pids=pids, cgroup=path, netns=netns_name)
    flt.check()
    if pids and netns_name is None:  # look for the sockets where the process lives
        flt = Filters(flt.ports, flt.pids, flt.cgroup, netns_of_pids(pids))
    return flt


def _columns(
    probe: manifest.Probe, columns: str | None, node: bool, cong: bool, listen: bool
) -> list[str]:
    if columns:
        return [c.strip() for c in columns.split(",")]
    cols = list(NODE_COLUMNS) if node else default_columns(probe)
    if cong:  # P90 makes room (it stays in --json)
        cols.insert(cols.index("retrans") + 1, "recovery_ms")
        cols = [c for c in cols if c != "srtt_p90_us"]
    if listen:
        cols.insert(cols.index("state") + 1, "accept_queue")
        cols.insert(cols.index("accept_queue") + 1, "listen_drops")
    return cols


FIRST_READ_S = 0.25


def first_read_option(fn: Any) -> Any:
    return click.option(
        "--first-read",
        type=float,
        default=FIRST_READ_S,
        show_default=True,
        help="Seconds from attach to the first read (at most --interval); its rates are over "
        "that shorter window. Later reads every --interval.",
    )(fn)


@click.command("trace-peers")
@click.option(
    "--interval", type=float, default=1.0, show_default=True, help="Seconds between rows."
)
@first_read_option
@click.option("--count", type=int, help="Stop after this many reads (the first one included).")
@click.option("--duration", type=float, help="Stop after this many seconds.")
@click.option(
    "--port",
    "ports",
    multiple=True,
    help="Only sockets with this local or remote port (repeat or comma-separate).",
)
@click.option("--pid", "pids", multiple=True, type=int, help="Only sockets this process holds.")
@click.option("--cgroup", "cg", help="Only sockets of this cgroup v2 (and its children).")
@click.option(
    "--netns",
    "netns_name",
    help="Only sockets of this named netns; --node is fetched from inside it.",
)
@click.option(
    "--node", "node_url", help="Label rows from the node's /peers (joined by socket cookie)."
)
@click.option(
    "--listen", is_flag=True, help="Also show listening sockets: accept queue and backlog."
)
@click.option("--json", "as_json", is_flag=True, help="NDJSON: one object per interval.")
@click.option(
    "--prometheus", "prom_addr", metavar="HOST:PORT", help="Serve Prometheus metrics here."
)
@click.option(
    "--prom-max-series",
    type=int,
    default=prom.DEFAULT_MAX_SERIES,
    show_default=True,
    help="Most label sets (peer, peer id, local port) exported; the rest go to `other`.",
)
@click.option("--sort", "sort_key", help="Column to sort by (default: the probe's).")
@click.option("--columns", help="Comma-separated columns (default: the probe's).")
@click.option(
    "--cong",
    is_flag=True,
    help="Also attach tcp_cong: congestion state and time in loss recovery per connection.",
)
@click.option("--no-bpf", is_flag=True, help="Poll sock_diag instead of attaching eBPF.")
@click.option(
    "--sample-ms",
    type=float,
    default=0.0,
    show_default=True,
    help="Cheaper probe: per socket, update RTT detail, cwnd and windows at most once per this "
    "many ms (in the kernel); events and min/max RTT still count every ACK. 0: every ACK.",
)
@click.option(
    "--hook",
    type=click.Choice(["tracepoint", "tp_btf", "auto"]),
    default="tracepoint",
    show_default=True,
    help="tcp_probe hook: tracepoint (classic), tp_btf (BTF raw tracepoint: no trace record, "
    "tcp_sock read at offsets from the kernel's BTF; cheaper in a CPU profile, not by "
    "throughput here, see "
    "docs/benchmarks.md), auto: tp_btf when possible, else the classic one with the reason. "
    "JSON lines carry the hook in use.",
)
@click.option(
    "--ebpf", "show_ebpf", is_flag=True, hidden=True, help="Print the final BPF C and exit."
)
def trace_peers(
    interval: float,
    first_read: float,
    count: int | None,
    duration: float | None,
    ports: tuple[str, ...],
    pids: tuple[int, ...],
    cg: str | None,
    netns_name: str | None,
    node_url: str | None,
    listen: bool,
    as_json: bool,
    prom_addr: str | None,
    prom_max_series: int,
    sort_key: str | None,
    columns: str | None,
    cong: bool,
    no_bpf: bool,
    sample_ms: float,
    hook: str,
    show_ebpf: bool,
) -> None:
    """Live per-connection TCP table: RTT, cwnd, ssthresh, throughput, retransmits, age.

    Every connection is shown, also idle ones the probe has no event for (from sock_diag).
    AGE is exact for connections opened while netdiag runs, "≥" for older ones.
    In a terminal the table is top-like: keys 1-9 sort by that column, r reverses, q quits.
    """
    _check_times(interval, first_read)
    if sample_ms < 0:
        raise InputError(f"--sample-ms {sample_ms} must be >= 0", "e.g. --sample-ms 1")
    sample_ns = round(sample_ms * 1e6)
    probe = manifest.load(PEERS_PROBE)
    flt = _filters(ports, pids, cg, netns_name)
    if show_ebpf:
        from netdiag.kernel import bcc_loader

        extra = {"SAMPLE_NS": sample_ns} if sample_ns else {}
        extra.update(peers.slot_defines(interval))
        defines = engine.defines_for(probe, flt.kernel_ports(), False, extra)
        click.echo(bcc_loader.render(bcc_loader.bpf_source(probe.source), defines))
        return
    cols = _columns(probe, columns, bool(node_url), cong, listen)
    sort_by = sort_key or probe.output.sort
    known = row_columns(probe)
    for c in [sort_by, *cols]:
        if c not in known:
            raise InputError(f"unknown column {c!r}", f"choose from: {', '.join(sorted(known))}")
    collector = prom.PromCollector(prom_max_series) if prom_addr else None
    err = Console(stderr=True)
    opts = peers.PeersOptions(flt, node_url, cong, no_bpf, listen, sample_ns, interval, hook)
    with _sigterm_as_interrupt():
        server = prom.serve(prom_addr, collector) if prom_addr and collector else None
        try:
            with peers.build(opts, lambda m: err.print(f"[yellow]netdiag: {m}[/]")) as pipe:
                times = (interval, first_read, count, duration)
                _drive(pipe, cols, sort_by, as_json, collector, *times)
        finally:
            if server is not None:
                server.shutdown()


def _drive(
    pipe: Pipeline,
    cols: list[str],
    sort_by: str,
    as_json: bool,
    collector: prom.PromCollector | None,
    interval: float,
    first_read: float,
    count: int | None,
    duration: float | None,
) -> None:
    """Sinks for this terminal: NDJSON, or the (live) table, plus Prometheus when asked."""
    from netdiag.diagnose.live import VerdictStage

    # the VERDICT column: the verdict engine over each socket's last five reads
    pipe.stages.append(VerdictStage())
    table = None if as_json else output.TableSink(console(), cols, sort_by, TITLE)
    pipe.stages.append(sort_stage(output.sort_key(table, sort_by), output.sort_reverse(table)))
    if collector is not None:
        pipe.sinks.append(prom.PromSink(collector))
    if table is None:
        pipe.sinks.append(output.NdjsonSink())
        pipe.run(interval, count, duration, first_s=first_read)
        return
    pipe.sinks.append(table)
    with table:
        pipe.run(interval, count, duration, ticker=table, first_s=first_read)


@click.group("probes", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@click.pass_context
def probes(ctx: click.Context, as_json: bool) -> None:
    """The probe catalog and its availability on this kernel; `probes run NAME` runs one."""
    if ctx.invoked_subcommand is not None:
        return
    items: list[dict[str, object]] = []
    cat = manifest.catalog()
    for p in cat:
        a = manifest.availability(p)
        items.append(
            {
                "name": p.name,
                "summary": p.summary,
                "available": a.ok,
                "missing": list(a.missing),
                "hooks": [h.tracepoint for h in p.hooks],
                "needs": list(p.needs),
                "key": p.key,
                "fields": [
                    {"name": f.name, "type": f.type, "unit": f.unit, "doc": f.doc}
                    for f in p.fields
                    if not f.hidden
                ],
                "default_columns": list(p.output.default_columns),
                "doc": p.doc,
            }
        )
    if as_json:
        emit_json({"probes": items})
        return
    from rich.table import Table

    t = Table(box=None, header_style="bold")
    for c in ("PROBE", "AVAILABLE", "HOOKS", "SUMMARY"):
        t.add_column(c, overflow="fold", no_wrap=c != "SUMMARY")
    notes = []
    for p in cat:
        a = manifest.availability(p)
        t.add_row(
            p.name, "yes" if a.ok else "no", "\n".join(h.tracepoint for h in p.hooks), p.summary
        )
        if not a.ok:
            notes.append(f"{p.name}: missing {'; '.join(a.missing)}")
    con = Console()
    con.print(t)
    for n in notes:
        con.print(n)
    return


@probes.command("run")
@click.argument("name")
@click.option("--interval", type=float, default=1.0, show_default=True)
@first_read_option
@click.option("--count", type=int)
@click.option("--duration", type=float)
@click.option("--port", "ports", multiple=True, help="Port filter (probes that support it).")
@click.option("--json", "as_json", is_flag=True, help="NDJSON: one object per interval.")
@click.option("--ebpf", "show_ebpf", is_flag=True, hidden=True)
def run_probe(
    name: str,
    interval: float,
    first_read: float,
    count: int | None,
    duration: float | None,
    ports: tuple[str, ...],
    as_json: bool,
    show_ebpf: bool,
) -> None:
    """Run any catalog probe and print its rows each interval."""
    _check_times(interval, first_read)
    probe = manifest.load(name)
    flt = Filters(ports=_ports(ports))
    if flt.ports and not probe.filter_ports:
        raise InputError(f"probe {name} cannot filter by port", "its tracepoint carries no ports")
    slots = peers.slot_defines(interval) if probe.output.slots_map else {}
    defines = engine.defines_for(probe, flt.kernel_ports(), False, slots)
    if show_ebpf:
        from netdiag.kernel import bcc_loader

        click.echo(bcc_loader.render(bcc_loader.bpf_source(probe.source), defines))
        return
    avail = manifest.availability(probe)
    if not avail.ok and not any(m.startswith(("tracefs", "read access")) for m in avail.missing):
        raise KernelFeatureError(
            f"probe {name} cannot attach here: missing {'; '.join(avail.missing)}",
            "see `netdiag doctor` for what this kernel offers",
        )
    title = f"netdiag probes run {name}"
    with _sigterm_as_interrupt(), Pipeline(engine.Session(probe, defines).open()) as pipe:
        if flt.ports and not flt.kernel_ports():  # more ports than the kernel half compares
            pipe.stages.append(row_filter(flt.keep))
        if any(f.name == "open_ns" for f in probe.fields):
            session = pipe.source
            assert isinstance(session, engine.Session)
            pipe.stages.append(age_stage(lambda: session.attached_ns))
        pipe.stages.append(sort_stage(lambda: probe.output.sort))
        assert isinstance(pipe.source, engine.Session)
        cost = Overhead([pipe.source])  # bpf_stats: runs and ns per run, in every frame
        pipe.closers.append(cost.close)
        pipe.pre_read.append(cost.open_window)  # stats on only just before each read
        pipe.post_wait.append(cost.sample)  # off as the wait ends, before the read
        if as_json:
            pipe.sinks.append(output.NdjsonSink())
            pipe.run(interval, count, duration, first_s=first_read)
            return
        cols = list(probe.output.default_columns)
        table = output.TableSink(console(), cols, probe.output.sort, title)
        pipe.sinks.append(table)
        with table:
            pipe.run(interval, count, duration, ticker=table, first_s=first_read)
