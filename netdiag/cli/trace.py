"""`netdiag trace-peers` (per-peer TCP truth from the kernel) and `netdiag probes` (the catalog)."""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from collections.abc import Iterator
from typing import Any

import click
from rich.console import Console
from rich.live import Live

from netdiag.errors import InputError, KernelFeatureError, NetdiagError, PrivilegeError
from netdiag.kernel import cgroup as kcgroup
from netdiag.measure import sockdiag
from netdiag.output import emit_json
from netdiag.trace import bpfstats, engine, enrich, manifest, nodejoin, sinks
from netdiag.trace.filters import Filters
from netdiag.trace.keys import Keys

PEERS_PROBE = "tcp_peers"


def row_columns(probe: manifest.Probe) -> set[str]:
    """Every column a trace-peers row can have: the probe's fields and what is derived or
    joined from them."""
    out = {f.name for f in probe.fields} | {f.rate for f in probe.fields if f.rate}
    out |= {d[0] for d in probe.derived} | {"peer", "age_s", "min_rtt_us", "cc"}
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
    by cookie) in place of the minimum of the smoothed RTT."""
    return ["min_rtt_us" if c == "srtt_min_us" else c for c in probe.output.default_columns]


# with --node the node's labels lead; p90, ssthresh and age make room (all stay in --json)
NODE_COLUMNS = (
    "peer_id",
    "mesh",
    "peer",
    "state",
    "min_rtt_us",
    "srtt_us",
    "snd_cwnd",
    "acked_bps",
    "retrans",
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


def _write_line(line: str) -> None:
    """One NDJSON line, whole: Ctrl-C / SIGTERM arriving mid-write wait until it is out."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    try:
        click.echo(line)
        sys.stdout.flush()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _console() -> Console:
    """Sized by the terminal when there is one; otherwise the 100 columns we design for."""
    c = Console()
    return c if c.is_terminal else Console(width=100)


class Overhead:
    """Per-event cost and CPU share of the attached programs, measured by the kernel."""

    def __init__(self, sessions: list[engine.Session]) -> None:
        self.sessions = sessions
        self.fd = bpfstats.enable()
        self.prev = self._total()
        self.t = time.monotonic()

    def _total(self) -> bpfstats.ProgStats:
        fds = {f"{s.probe.name}/{n}": fd for s in self.sessions for n, fd in s.prog_fds().items()}
        return bpfstats.total(bpfstats.read(fds))

    def sample(self) -> dict[str, float] | None:
        if self.fd is None:
            return None
        cur, now = self._total(), time.monotonic()
        d_ns, d_cnt, dt = (
            cur.run_time_ns - self.prev.run_time_ns,
            cur.run_cnt - self.prev.run_cnt,
            now - self.t,
        )
        self.prev, self.t = cur, now
        if dt <= 0:
            return None
        return {
            "bpf_runs": d_cnt,
            "bpf_runs_per_s": round(d_cnt / dt, 1),
            "bpf_ns_per_event": round(d_ns / d_cnt, 1) if d_cnt else 0.0,
            "bpf_cpu_pct": round(d_ns / (dt * 1e9) * 100, 4),
        }

    def close(self) -> None:
        bpfstats.disable(self.fd)
        self.fd = None


def _overhead_text(o: dict[str, float] | None) -> str | None:
    if not o:
        return None
    # runs count every tcp_probe on the host (filters are applied inside the program)
    return (
        f"probe cost {o['bpf_runs_per_s']:,.0f} runs/s × {o['bpf_ns_per_event']:.0f} ns "
        f"= {o['bpf_cpu_pct']:.3f}% of one CPU"
    )


def _filters(
    ports: tuple[str, ...], pids: tuple[int, ...], cg: str | None, netns_name: str | None
) -> Filters:
    path = kcgroup.resolve(cg) if cg else None
    return Filters(ports=_ports(ports), pids=pids, cgroup=path, netns=netns_name)


def _open_source(probe: manifest.Probe, flt: Filters, no_bpf: bool, err: Console) -> Any:
    """The eBPF session, or the sock_diag poller when BPF cannot run here (and why)."""
    from netdiag.trace import fallback

    if not no_bpf:
        defines = engine.defines_for(probe, flt.kernel_ports(), flt.by_cookie)
        try:
            return engine.Session(probe, defines).open()
        except (PrivilegeError, KernelFeatureError, NetdiagError) as e:
            err.print(
                f"[yellow]netdiag: eBPF unavailable ({e}); falling back to sock_diag polling[/]"
            )
    return fallback.Poller(probe, flt.ports, flt.netns, allowed=flt.allowed_cookies)


@click.command("trace-peers")
@click.option(
    "--interval", type=float, default=1.0, show_default=True, help="Seconds between rows."
)
@click.option("--count", type=int, help="Stop after this many intervals.")
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
@click.option("--json", "as_json", is_flag=True, help="NDJSON: one object per interval.")
@click.option(
    "--prometheus", "prom_addr", metavar="HOST:PORT", help="Serve Prometheus metrics here."
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
    "--ebpf", "show_ebpf", is_flag=True, hidden=True, help="Print the final BPF C and exit."
)
def trace_peers(
    interval: float,
    count: int | None,
    duration: float | None,
    ports: tuple[str, ...],
    pids: tuple[int, ...],
    cg: str | None,
    netns_name: str | None,
    node_url: str | None,
    as_json: bool,
    prom_addr: str | None,
    sort_key: str | None,
    columns: str | None,
    cong: bool,
    no_bpf: bool,
    show_ebpf: bool,
) -> None:
    """Live per-connection TCP table: RTT, cwnd, ssthresh, throughput, retransmits, age.

    In a terminal the table is top-like: keys 1-9 sort by that column, r reverses, q quits.
    """
    if interval <= 0:
        raise InputError(f"--interval {interval} must be > 0", "e.g. --interval 1")
    probe = manifest.load(PEERS_PROBE)
    flt = _filters(ports, pids, cg, netns_name)
    if show_ebpf:
        from netdiag.kernel import bcc_loader

        defines = engine.defines_for(probe, flt.kernel_ports(), flt.by_cookie)
        click.echo(bcc_loader.render(bcc_loader.bpf_source(probe.source), defines))
        return
    out = _console()
    err = Console(stderr=True)
    cols = [c.strip() for c in columns.split(",")] if columns else default_columns(probe)
    if node_url and not columns:
        cols = list(NODE_COLUMNS)
    if cong and not columns:
        cols.insert(cols.index("retrans") + 1, "recovery_ms")
    sort_by = sort_key or probe.output.sort
    known = row_columns(probe)
    for c in [sort_by, *cols]:
        if c not in known:
            raise InputError(f"unknown column {c!r}", f"choose from: {', '.join(sorted(known))}")
    collector = sinks.PromCollector() if prom_addr else None
    server = sinks.serve_prometheus(prom_addr, collector) if prom_addr and collector else None
    with _sigterm_as_interrupt():
        source = _open_source(probe, flt, no_bpf, err)
        cong_session: engine.Session | None = None
        try:
            if cong and isinstance(source, engine.Session):
                cp = manifest.load("tcp_cong")
                cong_session = engine.Session(cp, engine.defines_for(cp, flt.kernel_ports(), False))
                cong_session.open()
            elif cong:
                err.print("[yellow]netdiag: --cong needs eBPF; congestion columns stay empty[/]")
        except BaseException:
            if isinstance(source, engine.Session):
                source.close()
            raise
        sessions = [s for s in (source, cong_session) if isinstance(s, engine.Session)]
        overhead = Overhead(sessions) if sessions else None
        try:
            _loop(
                source,
                probe,
                flt,
                interval,
                count,
                duration,
                node_url,
                as_json,
                cols,
                sort_by,
                collector,
                overhead,
                out,
                cong_session,
            )
        finally:
            if overhead:
                overhead.close()
            if cong_session is not None:
                cong_session.close()
            if isinstance(source, engine.Session):
                source.close()
            if server is not None:
                server.shutdown()


def _loop(
    source: Any,
    probe: manifest.Probe,
    flt: Filters,
    interval: float,
    count: int | None,
    duration: float | None,
    node_url: str | None,
    as_json: bool,
    cols: list[str],
    sort_by: str,
    collector: sinks.PromCollector | None,
    overhead: Overhead | None,
    out: Console,
    cong: engine.Session | None = None,
) -> None:
    def before() -> None:
        if isinstance(source, engine.Session) and flt.by_cookie:
            source.set_allowed(flt.allowed_cookies() or set())

    before()
    interactive = out.is_terminal and not as_json
    live = Live(console=out, auto_refresh=False) if interactive else None
    view = View(cols, sort_by)
    start = time.monotonic()
    n = 0
    snap: engine.Snapshot | None = None
    o: dict[str, float] | None = None

    def render() -> None:
        assert snap is not None
        snap.rows = sinks.sort_rows(snap.rows, view.sort_by, view.reverse)
        title = f"netdiag trace-peers · {time.strftime('%H:%M:%S')}"
        if interactive:
            arrow = "↓" if view.reverse else "↑"
            title += f" · sort {sinks.header_for(view.sort_by)}{arrow} (keys 1-9 r q)"
        t = sinks.table(snap, cols, title, _overhead_text(o))
        if live is not None:
            live.update(t, refresh=True)
        else:
            out.print(t)

    with (
        live if live is not None else contextlib.nullcontext(),
        Keys(sys.stdin if interactive else _NoTty()) as keys,
    ):
        while True:
            deadline = time.monotonic() + interval
            while (left := deadline - time.monotonic()) > 0:
                key = keys.wait(left)
                if key is None:
                    break
                if view.key(key) == "quit":
                    return
                if snap is not None:
                    render()
            before()
            snap = source.read()
            snap.rows = [r for r in snap.rows if flt.keep(r)]
            extra: dict[str, Any] = {}
            if isinstance(source, engine.Session):
                extra["sock_diag_joined"] = enrich.join_tcp_info(
                    snap.rows, sockdiag.snapshot(flt.netns, ports=flt.ports)
                )
            if cong is not None:
                cs = cong.read()
                extra["cong_joined"] = enrich.join_cong(snap.rows, cs.rows)
                snap.lost += cs.lost
            if node_url:
                extra["node_matched"] = nodejoin.label(
                    snap.rows,
                    nodejoin.by_cookie(nodejoin.fetch_peers(node_url, netns_name=flt.netns)),
                )
            o = overhead.sample() if overhead else None
            if o:
                extra.update(o)
            snap.rows = sinks.sort_rows(snap.rows, view.sort_by, view.reverse)
            if collector:
                collector.update(snap)
            if as_json:
                _write_line(sinks.ndjson_line(snap, extra))
            else:
                render()
            n += 1
            if count is not None and n >= count:
                return
            if duration is not None and time.monotonic() - start >= duration - 1e-3:
                return


class _NoTty:
    def isatty(self) -> bool:
        return False


class View:
    """Sort state of the live table, driven by keys: 1-9 pick a column, r reverses, q quits."""

    def __init__(self, cols: list[str], sort_by: str) -> None:
        self.cols, self.sort_by, self.reverse = cols, sort_by, True

    def key(self, k: str) -> str | None:
        if k in ("q", "Q"):
            return "quit"
        if k in ("r", "R"):
            self.reverse = not self.reverse
        elif k.isdigit() and 1 <= int(k) <= len(self.cols):
            self.sort_by = self.cols[int(k) - 1]
        return None


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
@click.option("--count", type=int)
@click.option("--duration", type=float)
@click.option("--port", "ports", multiple=True, help="Port filter (probes that support it).")
@click.option("--json", "as_json", is_flag=True, help="NDJSON: one object per interval.")
@click.option("--ebpf", "show_ebpf", is_flag=True, hidden=True)
def run_probe(
    name: str,
    interval: float,
    count: int | None,
    duration: float | None,
    ports: tuple[str, ...],
    as_json: bool,
    show_ebpf: bool,
) -> None:
    """Run any catalog probe and print its rows each interval."""
    probe = manifest.load(name)
    p = _ports(ports)
    if p and not probe.filter_ports:
        raise InputError(f"probe {name} cannot filter by port", "its tracepoint carries no ports")
    defines = engine.defines_for(probe, p[:2], False)
    if show_ebpf:
        from netdiag.kernel import bcc_loader

        click.echo(bcc_loader.render(bcc_loader.bpf_source(probe.source), defines))
        return
    out = _console()
    with _sigterm_as_interrupt(), engine.Session(probe, defines) as s:
        for snap in engine.run(s, interval, count, duration):
            snap.rows = sinks.sort_rows(snap.rows, probe.output.sort)
            if as_json:
                _write_line(sinks.ndjson_line(snap))
            else:
                out.print(
                    sinks.table(
                        snap, list(probe.output.default_columns), f"netdiag probes run {name}", None
                    )
                )
