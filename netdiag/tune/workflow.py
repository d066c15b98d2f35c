"""One `netdiag tune` run as a workflow: measure -> plan -> apply -> verify -> (revert).

The CLI only parses options and renders what this returns; benchmarks and tests drive the
same steps without click. Progress reaches the caller through the optional hooks, so a
plan is on screen before the seconds-long verify measurement starts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from netdiag.errors import CheckFailed, InputError
from netdiag.tune import apply as tune_apply
from netdiag.tune import plan as tune_plan
from netdiag.tune import verify
from netdiag.tune.env import TuneEnv
from netdiag.tune.journal import Entry


@dataclass(frozen=True)
class Options:
    """How to run a request: what `--dry-run`, `--peer` and `--verify*` asked for."""

    peer: str | None = None
    dry_run: bool = False
    verify: bool = False
    verify_seconds: float = 5.0
    revert_if_worse: bool = False


@dataclass
class TuneResult:
    plan: tune_plan.Plan
    dry_run: bool
    entry: Entry | None = None
    verdict: verify.Verdict | None = None
    reverted: bool | None = None  # set when --revert-if-worse undid the entry
    revert_problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"plan": self.plan.to_json(), "dry_run": self.dry_run}
        if self.entry is not None:
            out["entry"] = self.entry.id
        if self.verdict is not None:
            out["verify"] = self.verdict.to_json()
        if self.reverted is not None:
            out["reverted"] = self.reverted
            out["revert_problems"] = self.revert_problems
        return out

    def failure(self) -> CheckFailed | None:
        """The error the run ends with (exit 5) once its output is shown, if any."""
        if self.verdict is None or self.entry is None or self.reverted is None:
            return None
        if self.revert_problems:
            return CheckFailed(
                f"verify: {self.verdict.why}; reverting entry {self.entry.id} was incomplete: "
                f"{self.revert_problems[0]}",
                "fix it and run `netdiag tune --revert` again; see `netdiag tune --show`",
            )
        return CheckFailed(
            f"verify: {self.verdict.why}; entry {self.entry.id} reverted (--revert-if-worse)",
            "the previous values are live again; see `netdiag tune --show`",
        )


def check(req: tune_plan.Request, opts: Options) -> None:
    """Refuse requests that ask for nothing or combine options that do not go together."""
    if opts.revert_if_worse and not opts.verify:
        raise InputError("--revert-if-worse needs --verify", "add --verify")
    asked = (req.cc, req.cgroup, req.ports, req.buffers, req.bdp, req.rtt, req.rate, req.profile)
    if not any(asked) and not req.sets and req.nofile is None:
        raise InputError(
            "nothing to tune",
            "give --cc, --buffers, --profile, --set or --nofile "
            "(see `netdiag tune --help`), or --show / --revert",
        )


def run(
    req: tune_plan.Request,
    env: TuneEnv,
    opts: Options,
    argv: list[str],
    *,
    on_plan: Callable[[tune_plan.Plan], None] | None = None,
    on_applied: Callable[[Entry], None] | None = None,
) -> TuneResult:
    """Plan the request; unless a dry run, apply it (journaled) and verify it if asked."""
    check(req, opts)
    vport = req.ports[0] if req.ports else 0
    if req.buffers == "auto" and opts.peer and not (req.bdp or req.rtt or req.rate):
        m = verify.measure(opts.peer, min(opts.verify_seconds, 3.0), req.netns)
        req.measured_bdp_bytes = max(1, verify.bdp_from(m))
    plan = tune_plan.build(req, env)
    result = TuneResult(plan=plan, dry_run=opts.dry_run)
    if on_plan is not None:
        on_plan(plan)
    if opts.dry_run or not plan.changes:
        return result
    before = (
        verify.measure(opts.peer, opts.verify_seconds, req.netns, vport) if opts.verify else None
    )
    result.entry = tune_apply.apply(plan, env, argv)
    if on_applied is not None:
        on_applied(result.entry)
    if before is None:
        return result
    after = verify.measure(opts.peer, opts.verify_seconds, req.netns, vport)
    result.verdict = verify.judge(before, after)
    if result.verdict.verdict == "worse" and opts.revert_if_worse:
        reverted = tune_apply.revert(env, result.entry.id)
        result.revert_problems = [p for r in reverted for p in r.problems]
        result.reverted = not result.revert_problems
    return result
