"""Run one probe: compile its kernel half with bcc (filters as -D defines; in a child process,
cached — see trace/loaders.py), attach, read its maps each interval into typed rows, detach on
exit, Ctrl-C or error.

Maps, programs and attachments are fds owned by this process (perf-event fds, no pins): they
vanish with it even after kill -9, so no probe can outlive netdiag.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from netdiag.errors import KernelFeatureError, NetdiagError
from netdiag.kernel import bcc_loader
from netdiag.kernel.bcc_loader import Defines, LoadEnv
from netdiag.kernel.host import REAL, HostPaths
from netdiag.trace import bpfstats, btfhook, loaders, symbols
from netdiag.trace.decode import Decoder, Row, apply_rates
from netdiag.trace.manifest import Probe, optional_defines

log = logging.getLogger("netdiag.trace.engine")


@dataclass
class Snapshot:
    """One interval of a probe: rows, cumulative stats and the interval's event figures."""

    probe: str
    t_ns: int  # CLOCK_MONOTONIC at read
    interval_s: float
    rows: list[Row]
    stats: dict[str, int]  # cumulative since attach
    events: int  # events in this interval
    events_per_s: float
    lost: int  # lost events in this interval: map full + kernel recursion misses
    source: str = "ebpf"  # or "sock_diag" (fallback)
    notes: list[str] = field(default_factory=list)
    hook: str = ""  # probes with a tp_btf variant: "tp_btf" or "tracepoint"

    def header(self) -> dict[str, Any]:
        return {
            "probe": self.probe,
            "source": self.source,
            "t_ns": self.t_ns,
            "interval_s": round(self.interval_s, 3),
            "events": self.events,
            "events_per_s": round(self.events_per_s, 1),
            "lost_events": self.lost,
            "stats": self.stats,
            **({"hook": self.hook} if self.hook else {}),
        }


def defines_for(
    probe: Probe,
    ports: tuple[int, ...],
    cookies: bool,
    extra: Mapping[str, int | str] | None = None,
) -> dict[str, int | str]:
    d: dict[str, int | str] = {}
    if probe.filter_ports and ports:
        d["FILTER_PORT"] = ports[0]
        if len(ports) > 1:
            d["FILTER_PORT2"] = ports[1]
    if probe.filter_cookies and cookies:
        d["FILTER_COOKIES"] = 1
    d.update(extra or {})
    return d


class Session:
    """A loaded, attached probe. Use as a context manager; close() detaches everything."""

    def __init__(
        self,
        probe: Probe,
        defines: Defines | None = None,
        env: LoadEnv | None = None,
        host: HostPaths = REAL,
        clock: Callable[[], int] = time.monotonic_ns,
        loader: str | None = None,
        hook: str = btfhook.DEFAULT,
    ) -> None:
        self.probe = probe
        self.want_hook = hook  # tracepoint | tp_btf | auto (probes with a [btf_hook])
        self.hook: btfhook.Choice | None = None  # what open() attached
        self.defines = dict(defines or {})
        self.env = env or LoadEnv()
        self.host = host
        self.clock = clock
        self.loader = loader
        self.bpf: loaders.Loaded | None = None
        self._prev_rows: dict[Any, Row] = {}
        self._prev_stats: dict[str, int] = {}
        self._prev_t = 0
        self.attached_ns = 0
        self.decoder: Decoder | None = None
        self._closed_slots: set[Any] = set()
        self._no_pending = False  # the probe's pending map is absent from this build

    def render(self) -> str:
        return bcc_loader.render(bcc_loader.bpf_source(self.probe.source), self.defines)

    def open(self) -> Session:
        bcc_loader.prepare(self.env)  # mounts tracefs before enums are read from it
        enums = symbols.resolve_enums(self.probe.enums, self.host)
        self.defines = {**optional_defines(self.probe, self.host), **self.defines}
        src = bcc_loader.bpf_source(self.probe.source)
        self.bpf = self._load(src)
        self.decoder = Decoder(self.probe, enums, self.bpf.ksym)
        self._prev_t = self.attached_ns = self.clock()
        return self

    def _load(self, src: Any) -> loaders.Loaded:
        """Load with the hook btfhook.choose() picks; a tp_btf program the kernel refuses
        falls back to the classic tracepoint (auto) with the refusal as the reason."""
        spec = self.probe.btf_hook
        facts = btfhook.facts_for(spec, self.env)
        choice = btfhook.choose(spec, self.want_hook, loaders.chosen(self.loader), facts)
        if self.want_hook == btfhook.TP_BTF and choice.hook != btfhook.TP_BTF:
            raise KernelFeatureError(
                f"tp_btf hook unavailable: {choice.reason}", "use --hook auto or tracepoint"
            )
        if choice.hook == btfhook.TP_BTF:
            try:
                loaded = loaders.load(
                    src, {**self.defines, **choice.defines}, self.env, self.loader, choice.btf_ids
                )
            except NetdiagError as e:
                # a PrivilegeError too: prepare() has required CAP_BPF + CAP_PERFMON already, so
                # a refusal here is tp_btf's; the classic load raises it again if it is not
                if self.want_hook == btfhook.TP_BTF:
                    raise
                log.warning("tp_btf hook refused, using the classic tracepoint: %s", e.what)
                choice = btfhook.Choice(btfhook.TRACEPOINT, f"the kernel refused tp_btf: {e.what}")
            else:
                self.hook = choice
                return loaded
        self.hook = choice
        return loaders.load(src, self.defines, self.env, self.loader)

    def hook_line(self) -> str:
        """Which hook carries the probe's hot event, and why when it is the fallback."""
        if self.hook is None or self.probe.btf_hook is None:
            return ""
        return self.hook.describe(self.probe.btf_hook)

    @property
    def attached(self) -> int:
        return self.bpf.attached() if self.bpf is not None else 0

    def prog_fds(self) -> dict[str, int]:
        """Program name -> fd (for run-time statistics)."""
        return self.bpf.prog_fds() if self.bpf is not None else {}

    def misses(self) -> dict[str, int]:
        """Recursion misses per program since load (events the kernel did not run us for)."""
        return {n: s.recursion_misses for n, s in bpfstats.read(self.prog_fds()).items()}

    def _stats(self) -> dict[str, int]:
        assert self.bpf is not None
        table = self.bpf.table(self.probe.output.stats_map)
        out = {name: table.sum(i) for i, name in enumerate(self.probe.output.stats)}
        out["recursion_misses"] = sum(self.misses().values())
        return out

    def read(self) -> Snapshot:
        assert self.bpf is not None and self.decoder is not None, "open() first"
        now = self.clock()
        table = self.bpf.table(self.probe.output.map)
        rows: list[Row] = []
        closed_keys = []
        cf = self.probe.output.closed_field
        for k, v in table.items():
            row = self.decoder.row(k, v, now)
            rows.append(row)
            if cf and row.get(cf):
                closed_keys.append(k)
        for k in closed_keys:  # reported once with their final figures, then forgotten
            table.delete(k)
        if self.probe.output.slots_map:
            rows += self._slot_rows(now)
        if self.probe.output.pending_map:
            self._fold_pending(rows)
        dt = (now - self._prev_t) / 1e9
        apply_rates(self.probe, rows, self._prev_rows, dt, self.decoder.key_of)
        stats = self._stats()
        o = self.probe.output
        ev = stats.get(o.events_stat, 0) - self._prev_stats.get(o.events_stat, 0)
        lost = sum(
            stats.get(k, 0) - self._prev_stats.get(k, 0) for k in (o.lost_stat, "recursion_misses")
        )
        self._prev_rows = {self.decoder.key_of(r): r for r in rows}
        self._prev_stats = stats
        self._prev_t = now
        hook = self.hook.hook if self.hook is not None and self.probe.btf_hook else ""
        return Snapshot(
            self.probe.name, now, dt, rows, stats, ev, ev / dt if dt > 0 else 0.0, lost, hook=hook
        )

    def _slot_rows(self, now: int) -> list[Row]:
        """Rows of the direct-mapped array: empty slots skipped; a closed row reported once
        (the kernel reuses its slot later, so it is not deleted here)."""
        assert self.bpf is not None and self.decoder is not None
        o = self.probe.output
        assert o.slots_map is not None
        key_c = next(f.c for f in self.probe.fields if f.name == self.probe.key)
        rows, closed = [], set()
        for k, v in self.bpf.table(o.slots_map).items():
            if not getattr(v, key_c):
                continue
            row = self.decoder.row(k, v, now)
            if o.closed_field and row.get(o.closed_field):
                ident = self.decoder.key_of(row)
                closed.add(ident)
                if ident in self._closed_slots:
                    continue
            rows.append(row)
        self._closed_slots = closed  # those still in their slot: not reported again
        return rows

    def _fold_pending(self, rows: list[Row]) -> None:
        """Add what waits per CPU for a row's next sample (the probe's pending map, present in
        sampled builds only) to the rows read: a socket's ACKs on a CPU where it was not sampled
        again would otherwise stay out of its row. The kernel folds them later itself; a read
        adds without writing back, so each read's figures include them exactly once."""
        assert self.bpf is not None
        o = self.probe.output
        assert o.pending_map is not None
        if self._no_pending:
            return
        try:
            table = self.bpf.table(o.pending_map)
        except (NetdiagError, KeyError):
            self._no_pending = True  # not this build (per-ACK): nothing ever waits
            return
        by_key = {r.get(self.probe.key): r for r in rows}
        missing = {f.name: f.missing for f in self.probe.fields}
        for _k, leaf in table.items():
            # per-CPU: one struct per CPU (a list from the light loader, an array from bcc)
            for c in [leaf] if hasattr(leaf, o.pending_key) else leaf:
                r = by_key.get(int(getattr(c, o.pending_key)))
                if r is None:
                    continue
                for name, op, member in o.pending_fold:
                    v = int(getattr(c, member))
                    if v == missing.get(name):
                        continue
                    cur = r.get(name)
                    if op == "add":
                        r[name] = (cur or 0) + v
                    elif cur is None:
                        r[name] = v
                    else:
                        r[name] = min(cur, v) if op == "min" else max(cur, v)

    def close(self) -> None:
        if self.bpf is not None:
            try:
                self.bpf.close()
            finally:
                self.bpf = None

    def __enter__(self) -> Session:
        return self.open()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def run(
    session: Session,
    interval_s: float,
    count: int | None = None,
    duration_s: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
    before_read: Callable[[], None] | None = None,
) -> Iterator[Snapshot]:
    """Yield a snapshot every interval until `count` snapshots or `duration_s` have passed."""
    start = time.monotonic()
    n = 0
    while True:
        sleep(interval_s)
        if before_read:
            before_read()
        yield session.read()
        n += 1
        if count is not None and n >= count:
            return
        if duration_s is not None and time.monotonic() - start >= duration_s - 1e-3:
            return
