"""Pipeline sinks for a terminal or a pipe: NDJSON lines, and the table (top-like when stdout
is a terminal: keys 1-9 sort by that column, r reverses, q quits)."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from types import TracebackType

import click
from rich.console import Console
from rich.live import Live

from netdiag.trace import overhead, sinks
from netdiag.trace.keys import Keys
from netdiag.trace.pipeline import Frame


def write_line(line: str) -> None:
    """One NDJSON line, whole: Ctrl-C / SIGTERM arriving mid-write wait until it is out."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    try:
        click.echo(line)
        sys.stdout.flush()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class NdjsonSink:
    def __init__(self, write: Callable[[str], None] = write_line) -> None:
        self.write = write

    def emit(self, frame: Frame) -> None:
        self.write(sinks.ndjson_line(frame.snap, frame.extra))


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


class _NoTty:
    def isatty(self) -> bool:
        return False


class TableSink:
    """The table each interval; in a terminal one live, re-sortable table (also a Ticker)."""

    def __init__(self, out: Console, cols: list[str], sort_by: str, title: str) -> None:
        self.out, self.cols, self.title = out, cols, title
        self.view = View(cols, sort_by)
        self.interactive = out.is_terminal
        self.live = Live(console=out, auto_refresh=False) if self.interactive else None
        self.keys = Keys(sys.stdin if self.interactive else _NoTty())
        self.frame: Frame | None = None

    def __enter__(self) -> TableSink:
        if self.live is not None:
            self.live.__enter__()
        self.keys.__enter__()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.keys.__exit__(et, e, tb)
        if self.live is not None:
            self.live.__exit__(et, e, tb)

    def _render(self) -> None:
        assert self.frame is not None
        snap = self.frame.snap
        snap.rows = sinks.sort_rows(snap.rows, self.view.sort_by, self.view.reverse)
        title = f"{self.title} · {time.strftime('%H:%M:%S')}"
        if self.interactive:
            arrow = "↓" if self.view.reverse else "↑"
            title += f" · sort {sinks.header_for(self.view.sort_by)}{arrow} (keys 1-9 r q)"
        cost = overhead.text(self.frame.extra) if "bpf_runs" in self.frame.extra else None
        t = sinks.table(snap, self.cols, title, cost, extra=self.frame.extra)
        if self.live is not None:
            self.live.update(t, refresh=True)
        else:
            self.out.print(t)

    def emit(self, frame: Frame) -> None:
        self.frame = frame
        self._render()

    def wait(self, seconds: float) -> bool:
        """Ticker: wait for the next read, re-sorting on keys; False on `q`."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            key = self.keys.wait(left)
            if key is None:
                break
            if self.view.key(key) == "quit":
                return False
            if self.frame is not None:
                self._render()
        return True


def sort_key(sink: TableSink | None, default: str) -> Callable[[], str]:
    return (lambda: sink.view.sort_by) if sink is not None else (lambda: default)


def sort_reverse(sink: TableSink | None) -> Callable[[], bool]:
    return (lambda: sink.view.reverse) if sink is not None else (lambda: True)
