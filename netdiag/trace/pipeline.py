"""A trace pipeline: source -> stages (filters, enrichment) -> sinks, one frame per interval.

trace-peers, `probes run` and the probe benchmarks all drive one of these; the CLI only parses
options, builds the pipeline and picks the sinks. Stages are plain callables over a Frame, so a
test can run a pipeline on a fake source and fake stages without a kernel.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from netdiag.measure.sockdiag import TcpConn
from netdiag.trace.engine import Snapshot


class Source(Protocol):
    def read(self) -> Snapshot: ...

    def close(self) -> None: ...


@dataclass
class Frame:
    """One interval on its way through the pipeline."""

    snap: Snapshot
    extra: dict[str, Any] = field(default_factory=dict)  # header fields for NDJSON
    conns: list[TcpConn] | None = None  # the sock_diag snapshot of this read, when taken


Stage = Callable[[Frame], None]


class Sink(Protocol):
    def emit(self, frame: Frame) -> None: ...


class Ticker(Protocol):
    """Waits for the next read; returns False to stop (a `q` key in the live table)."""

    def wait(self, seconds: float) -> bool: ...


class SleepTicker:
    def __init__(self, sleep: Callable[[float], None] = time.sleep) -> None:
        self.sleep = sleep

    def wait(self, seconds: float) -> bool:
        self.sleep(seconds)
        return True


@dataclass
class Pipeline:
    source: Source
    stages: list[Stage] = field(default_factory=list)
    sinks: list[Sink] = field(default_factory=list)
    closers: list[Callable[[], None]] = field(default_factory=list)  # run in reverse on close
    opened: float = field(default_factory=time.monotonic)  # the source attached just before
    # called `pre_read_s` before each read of frames() (at most a tenth of the wait): a
    # measurement that runs only just before the read (the probes' bpf run-time stats)
    pre_read: list[Callable[[], None]] = field(default_factory=list)
    pre_read_s: float = 0.1
    # called as each wait of frames() ends, before source.read() and the stages (sock_diag,
    # tcp_info, --node HTTP…), so what they measure is the wait's lead and not the tracer's
    # own work after it; what they return goes into the frame's header (`extra`)
    post_wait: list[Callable[[], Mapping[str, Any] | None]] = field(default_factory=list)

    def step(self, extra: Mapping[str, Any] | None = None) -> Frame:
        frame = Frame(self.source.read())
        if extra:
            frame.extra.update(extra)
        for stage in self.stages:
            stage(frame)
        for sink in self.sinks:
            sink.emit(frame)
        return frame

    def frames(
        self,
        interval_s: float,
        count: int | None = None,
        duration_s: float | None = None,
        ticker: Ticker | None = None,
        clock: Callable[[], float] = time.monotonic,
        first_s: float | None = None,
    ) -> Iterator[Frame]:
        """A frame every interval until `count` frames, `duration_s`, or the ticker says stop.

        `first_s`: the first frame comes that long after the pipeline was opened (not a whole
        interval after this call), so set-up done after attaching (sock_diag baselines, imports)
        overlaps the first window; rates in it are over its true, shorter length."""
        tick = ticker or SleepTicker()
        start = clock()
        n = 0
        wait = interval_s
        if first_s is not None:
            wait = max(0.0, min(first_s, interval_s) - (start - self.opened))
        while self._wait(tick, wait):
            wait = interval_s
            extra: dict[str, Any] = {}
            for fn in self.post_wait:
                extra.update(fn() or {})
            yield self.step(extra)
            n += 1
            if count is not None and n >= count:
                return
            if duration_s is not None and clock() - start >= duration_s - 1e-3:
                return

    def _wait(self, tick: Ticker, wait: float) -> bool:
        """Wait until the next read; the pre-read hooks run `lead` seconds before it."""
        if not self.pre_read:
            return tick.wait(wait)
        lead = min(self.pre_read_s, max(wait, 0.0) * 0.1)
        if not tick.wait(wait - lead):
            return False
        for fn in self.pre_read:
            fn()
        return tick.wait(lead)

    def run(
        self,
        interval_s: float,
        count: int | None = None,
        duration_s: float | None = None,
        ticker: Ticker | None = None,
        first_s: float | None = None,
    ) -> int:
        """Drive the pipeline; returns the number of frames emitted."""
        frames = self.frames(interval_s, count, duration_s, ticker, first_s=first_s)
        return sum(1 for _ in frames)

    def close(self) -> None:
        errors: list[BaseException] = []
        for fn in [*reversed(self.closers), self.source.close]:
            try:
                fn()
            except Exception as e:  # detach everything even if one part fails
                errors.append(e)
        self.closers = []
        if errors:
            raise errors[0]

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def sort_stage(key: Callable[[], str], reverse: Callable[[], bool] = lambda: True) -> Stage:
    from netdiag.trace import sinks

    def stage(frame: Frame) -> None:
        frame.snap.rows = sinks.sort_rows(frame.snap.rows, key(), reverse())

    return stage


def age_stage(attached_ns: Callable[[], int]) -> Stage:
    """AGE (for a closed socket: its lifetime): exact when the probe saw the socket open
    (`open_ns`); otherwise a lower bound — it is at least as old as the probe — marked
    `age_exact: false` and shown as "≥"."""

    def stage(frame: Frame) -> None:
        for r in frame.snap.rows:
            if r.get("state") == "LISTEN":
                continue
            if r.get("open_ns"):
                r["age_exact"] = True
                continue
            end = r.get("closed_ns") or frame.snap.t_ns
            r["age_s"] = round(max(0.0, (end - attached_ns()) / 1e9), 3)
            r["age_exact"] = False

    return stage


def row_filter(keep: Callable[[dict[str, Any]], bool]) -> Stage:
    def stage(frame: Frame) -> None:
        frame.snap.rows = [r for r in frame.snap.rows if keep(r)]

    return stage


def run_probe(
    source: Source, stages: Sequence[Stage], interval_s: float, count: int, sink: Sink | None = None
) -> list[Frame]:
    """A short run with collected frames (benchmarks and tests)."""
    p = Pipeline(source, list(stages), [sink] if sink else [])
    return list(p.frames(interval_s, count))
