"""Apply a plan with the journal written first; revert journal entries; report live state.

Crash safety: the entry (every old and new value) is fsynced with status `applying` before
the first change. Whatever happens next — an error, Ctrl-C, kill -9 — `revert` can restore
every old value, because each change's revert is idempotent.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from netdiag.errors import InputError, NetdiagError
from netdiag.tune import sockops
from netdiag.tune.changes import Change, SockopsChange
from netdiag.tune.env import TuneEnv
from netdiag.tune.journal import Entry, Journal
from netdiag.tune.plan import Plan


def journal_of(env: TuneEnv) -> Journal:
    return Journal(env.state)


def _pause(env: TuneEnv, entry: Entry, done: int) -> None:
    # test hook (see TuneEnv.pause_after): simulate a crash window mid-apply
    print(
        f"netdiag: test pause after {done} changes (journal entry {entry.id})",
        file=sys.stderr,
        flush=True,
    )
    while True:
        time.sleep(3600)


def apply(plan: Plan, env: TuneEnv, argv: list[str]) -> Entry:
    """Journal the plan, then make each change; on any failure undo what was done and raise."""
    j = journal_of(env)
    with j.locked():
        entry = j.new(argv, plan.changes, plan.notes)
        done = 0
        try:
            for ch in plan.changes:
                if env.pause_after is not None and done == env.pause_after:
                    _pause(env, entry, done)
                ch.apply(env)
                done += 1
        except BaseException as e:
            # Undo the failing change best-effort (each apply is atomic — a sysctl write, a
            # prlimit, a rename — except sockops, whose only partial state, a link not yet
            # pinned, died with its fd; so its revert errors mean nothing), then the ones made.
            if done < len(plan.changes):
                with contextlib.suppress(NetdiagError):
                    plan.changes[done].revert(env)
            problems = _revert_changes(plan.changes[:done], env)
            if isinstance(e, InputError) and not problems:
                # the kernel refused a value (bad input) and everything before it is undone:
                # nothing changed, so nothing is journaled
                j.discard(entry)
                raise type(e)(e.what, f"{e.fix + '; ' if e.fix else ''}nothing changed") from e
            entry.status = "rolled-back" if not problems else "revert-incomplete"
            entry.notes.append(f"apply failed at change {done + 1}: {e}")
            j.save(entry)
            if isinstance(e, NetdiagError):
                tail = (
                    "nothing changed (journal entry {} rolled back)"
                    if not problems
                    else "ROLLBACK INCOMPLETE for entry {}: run `netdiag tune --revert {}`"
                )
                raise type(e)(
                    e.what, f"{e.fix + '; ' if e.fix else ''}" + tail.format(entry.id, entry.id)
                ) from e
            raise
        entry.status = "applied"
        j.save(entry)
        return entry


def _revert_changes(
    chs: list[Change], env: TuneEnv, on_note: Callable[[Change, str], None] | None = None
) -> list[str]:
    problems: list[str] = []
    for ch in reversed(chs):
        try:
            note = ch.revert(env)
            if note and on_note:
                on_note(ch, note)
        except NetdiagError as e:
            problems.append(f"{ch.scope} {ch.target}: {e}")
    return problems


@dataclass
class RevertResult:
    entry: Entry
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def revert(env: TuneEnv, entry_id: int | None = None) -> list[RevertResult]:
    """Revert one live entry (refused if a later live entry touches the same settings), or
    with no id every live entry, newest first."""
    j = journal_of(env)
    with j.locked():
        live = [e for e in j.entries() if e.live]
        if entry_id is not None:
            target = j.get(entry_id)
            if not target.live:
                raise InputError(
                    f"journal entry {entry_id} is {target.status}, not live",
                    "see `netdiag tune --show`",
                )
            mine = {c.ident for c in target.changes}
            later = [e.id for e in live if e.id > entry_id and mine & {c.ident for c in e.changes}]
            if later:
                raise InputError(
                    f"entry {entry_id} touches settings that later entries {later} changed again",
                    f"revert them first (`netdiag tune --revert {later[-1]}` …) or all: --revert",
                )
            todo = [target]
        else:
            todo = sorted(live, key=lambda e: e.id, reverse=True)
        results = []
        for e in todo:
            r = RevertResult(e)

            def note(ch: Change, text: str, r: RevertResult = r) -> None:
                r.notes.append(f"{ch.scope} {ch.target}: {text}")

            for ch in e.changes:
                if ch.kind == "sysctl" and ch.live(env) not in (ch.new, ch.old):
                    note(
                        ch,
                        f"changed to {ch.live(env)!r} by someone else since; restoring {ch.old!r}",
                    )
            r.problems = _revert_changes(e.changes, env, note)
            e.status = "reverted" if not r.problems else "revert-incomplete"
            e.reverted = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            j.save(e)
            results.append(r)
        if entry_id is None:
            orphans = _remove_orphan_pins(env, [e for e in j.entries() if e.live])
            if orphans:
                results.append(orphans)
        return results


def orphan_pins(env: TuneEnv, live: list[Entry]) -> list[Path]:
    """Pins in this journal's bpffs directory that no live entry records: an attachment
    that has outlived netdiag's record (e.g. its journal file was deleted)."""
    recorded = {c.pin for e in live for c in e.changes if isinstance(c, SockopsChange)}
    d = sockops.pin_dir(env)
    if not d.is_dir():
        return []
    return [p for p in sorted(d.iterdir()) if str(p) not in recorded]


def _remove_orphan_pins(env: TuneEnv, live: list[Entry]) -> RevertResult | None:
    found = orphan_pins(env, live)
    if not found:
        return None
    r = RevertResult(Entry(id=0, created="", argv=[], status="reverted", changes=[]))
    for p in found:
        try:
            sockops.unpin(p)
            r.notes.append(f"orphan sockops link {p} (no journal record) detached and unpinned")
        except NetdiagError as e:
            r.problems.append(f"orphan sockops link {p}: {e}")
    return r
