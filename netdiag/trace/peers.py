"""The trace-peers pipeline: tcp_peers (or the sock_diag poller) -> filters -> sock_diag
seeding and joins -> age -> tcp_cong -> node labels -> listeners -> overhead -> sort.

Every socket is accounted for: the kernel half counts from the moment it sees a socket,
filters are decided at read time, and sockets the probe has no event for (idle established
connections, and listeners with `--listen`) get rows from the sock_diag snapshot of the same
read, their counters relative to when netdiag first saw them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from netdiag.errors import KernelFeatureError, NetdiagError, PrivilegeError
from netdiag.measure import sockdiag
from netdiag.trace import enrich, listeners, manifest, nodejoin
from netdiag.trace.decode import Row
from netdiag.trace.engine import Session, defines_for
from netdiag.trace.fallback import ALL_STATES, SHOWN, Poller, row_of
from netdiag.trace.filters import Filters
from netdiag.trace.membership import Membership
from netdiag.trace.overhead import Overhead
from netdiag.trace.pipeline import Frame, Pipeline, Stage, age_stage

PEERS_PROBE = "tcp_peers"
COUNTERS = ("bytes_acked", "retrans")


@dataclass(frozen=True)
class PeersOptions:
    filters: Filters = field(default_factory=Filters)
    node_url: str | None = None
    cong: bool = False
    no_bpf: bool = False
    listen: bool = False
    sample_ns: int = (
        0  # -DSAMPLE_NS: per-socket tcp_probe detail at most once per this (0: every ACK)
    )
    interval_s: float = 1.0  # how often the map is read: a closed slot row must be read first
    hook: str = "tracepoint"  # tcp_probe hook: tracepoint | tp_btf | auto (trace/btfhook.py)


SLOT_REUSE_NS = 60_000_000_000  # bpf/tcp_peers.bpf.c's default


def slot_defines(interval_s: float) -> dict[str, int]:
    """-DSLOT_REUSE_NS when reads are so far apart that a closed socket's slot could be
    reused before its final row was read (3 intervals; the program's 60 s otherwise)."""
    need = round(3 * interval_s * 1e9)
    return {"SLOT_REUSE_NS": need} if need > SLOT_REUSE_NS else {}


def sockdiag_stage(
    flt: Filters,
    source: Any,
    snapshot: Callable[..., list[sockdiag.TcpConn]] = sockdiag.snapshot,
) -> Stage:
    """The sock_diag snapshot of this read (all states; the poller's own when it has one)."""

    def stage(frame: Frame) -> None:
        if isinstance(source, Poller):
            frame.conns = source.conns
        else:
            frame.conns = list(snapshot(flt.netns, states=ALL_STATES, ports=flt.ports))

    return stage


def membership_stage(flt: Filters, members: Membership) -> Stage:
    def stage(frame: Frame) -> None:
        conns = frame.conns or []
        members.update(conns)
        frame.snap.rows = [r for r in frame.snap.rows if flt.keep(r) and members.keep(r)]
        live = {c.cookie for c in conns} | {int(r.get("sock_cookie") or 0) for r in frame.snap.rows}
        members.forget(live)

    return stage


class Seeder:
    """Rows for sockets the probe has no event for, from the same read's sock_diag snapshot.

    Counters (bytes acked, retransmits) are relative to the first time netdiag saw the socket,
    like the kernel half's, so rows from both sources add up to the same totals."""

    def __init__(self, probe: manifest.Probe, members: Membership) -> None:
        self.probe, self.members = probe, members
        self.base: dict[int, dict[str, int]] = {}
        self.prev: dict[int, Row] = {}

    def prime(self, conns: list[sockdiag.TcpConn]) -> None:
        """Baselines at start: the first interval has rates for every socket alive then."""
        for c in conns:
            if c.info is not None:
                self.base[c.cookie] = {k: int(row_of(c)[k] or 0) for k in COUNTERS}

    def __call__(self, frame: Frame) -> None:
        from netdiag.trace.decode import apply_rates

        conns = frame.conns or []
        have = {r.get("sock_cookie") for r in frame.snap.rows}
        seeded: list[Row] = []
        for c in self.members.allowed(conns):
            if c.cookie in have or c.state in SHOWN or c.info is None:
                continue
            r = row_of(c)
            base = self.base.setdefault(c.cookie, {k: int(r[k] or 0) for k in COUNTERS})
            for k in COUNTERS:
                r[k] = int(r[k] or 0) - base[k]
            r["from_sock_diag"] = True
            seeded.append(r)
        apply_rates(self.probe, seeded, self.prev, frame.snap.interval_s, _cookie)
        self.prev = {r["sock_cookie"]: r for r in seeded}
        live = {c.cookie for c in conns}
        self.base = {k: v for k, v in self.base.items() if k in live}
        frame.snap.rows.extend(seeded)
        frame.extra["rows_from_sock_diag"] = len(seeded)


def _cookie(r: Row) -> Any:
    return r.get("sock_cookie")


def tcp_info_stage() -> Stage:
    def stage(frame: Frame) -> None:
        if frame.snap.source == "ebpf":
            frame.extra["sock_diag_joined"] = enrich.join_tcp_info(
                frame.snap.rows, frame.conns or []
            )

    return stage


def cong_stage(cong: Session) -> Stage:
    def stage(frame: Frame) -> None:
        cs = cong.read()
        frame.extra["cong_joined"] = enrich.join_cong(frame.snap.rows, cs.rows)
        frame.snap.lost += cs.lost

    return stage


def node_stage(url: str, netns_name: str | None) -> Stage:
    def stage(frame: Frame) -> None:
        frame.extra["node_matched"] = nodejoin.label(
            frame.snap.rows,
            nodejoin.by_sock_cookie(nodejoin.fetch_peers(url, netns_name=netns_name)),
        )

    return stage


def listen_stage(flt: Filters, members: Membership) -> Stage:
    overflow = listeners.OverflowDelta(flt.netns)

    def stage(frame: Frame) -> None:
        allowed = {c.cookie for c in members.allowed(frame.conns or [])}
        for lst in listeners.listeners(flt.netns):
            if flt.ports and lst.lport not in flt.ports:
                continue
            if members.active and lst.cookie not in allowed:
                continue
            frame.snap.rows.append(lst.row())
        frame.extra.update(overflow.sample())

    return stage


def open_source(
    probe: manifest.Probe,
    flt: Filters,
    no_bpf: bool,
    warn: Callable[[str], None],
    sample_ns: int = 0,
    interval_s: float = 1.0,
    hook: str = "tracepoint",
) -> Session | Poller:
    """The eBPF session, or the sock_diag poller when BPF cannot run here (and why)."""
    if not no_bpf:
        extra = {"SAMPLE_NS": sample_ns} if sample_ns > 0 else {}
        extra.update(slot_defines(interval_s))
        try:
            s = Session(probe, defines_for(probe, flt.kernel_ports(), False, extra), hook=hook)
            s.open()
            if s.hook is not None and s.hook.hook != "tp_btf" and hook == "auto":
                warn(f"tcp_probe hook: {s.hook_line()}")  # the fallback, and why
            return s
        except (PrivilegeError, KernelFeatureError, NetdiagError) as e:
            if hook == "tp_btf":
                raise  # asked for explicitly: no silent change of hook
            warn(f"eBPF unavailable ({e}); falling back to sock_diag polling")
    return Poller(probe, flt.ports, flt.netns).open()


def build(opts: PeersOptions, warn: Callable[[str], None]) -> Pipeline:
    """Open the sources and assemble the pipeline (no sinks: the caller adds them).

    Close the returned pipeline to detach everything it attached."""
    flt = opts.filters
    flt.check()
    probe = manifest.load(PEERS_PROBE)
    source = open_source(probe, flt, opts.no_bpf, warn, opts.sample_ns, opts.interval_s, opts.hook)
    pipe = Pipeline(source)
    try:
        members = flt.membership()
        seeder = Seeder(probe, members)
        first = list(sockdiag.snapshot(flt.netns, states=ALL_STATES, ports=flt.ports))
        members.update(first)
        seeder.prime(members.allowed(first))
        pipe.stages += [
            sockdiag_stage(flt, source),
            membership_stage(flt, members),
            seeder,
            tcp_info_stage(),
            age_stage(lambda: source.attached_ns),
        ]
        sessions = [source] if isinstance(source, Session) else []
        if opts.cong and isinstance(source, Session):
            cp = manifest.load("tcp_cong")
            cong = Session(cp, defines_for(cp, flt.kernel_ports(), False)).open()
            pipe.closers.append(cong.close)
            sessions.append(cong)
            pipe.stages.append(cong_stage(cong))
        elif opts.cong:
            warn("--cong needs eBPF; congestion columns stay empty")
        if opts.node_url:
            pipe.stages.append(node_stage(opts.node_url, flt.netns))
        if opts.listen:
            pipe.stages.append(listen_stage(flt, members))
        overhead = Overhead(sessions) if sessions else None
        if overhead is not None:
            pipe.closers.append(overhead.close)
            pipe.pre_read.append(overhead.open_window)  # stats on just before each read
            pipe.post_wait.append(overhead.sample)  # and off as the wait ends, before the read
    except BaseException:
        pipe.close()
        raise
    return pipe
