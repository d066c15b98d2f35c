"""Per-namespace default congestion control for the variants of a bench run, through tune's
plan/journal/revert: tune also allows the cc on the host when a namespace may not pick it,
journaled, so `netdiag tune --revert` recovers after a kill -9."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from netdiag.errors import NetdiagError
from netdiag.kernel import cc as kernel_cc
from netdiag.tune import apply as tune_apply
from netdiag.tune import plan as tune_plan
from netdiag.tune.env import TuneEnv


@contextlib.contextmanager
def namespace_cc(namespaces: list[str], cc: str, notes: list[str]) -> Iterator[None]:
    """Every namespace defaults to `cc` for the duration (reverted on exit)."""
    check_cc((cc,))
    env = TuneEnv.from_environ()
    entries: list[int] = []
    try:
        for ns in namespaces:
            # A namespace may default only to a cc on the host's allowed list: the bench's own
            # namespaces need it, and the host change is journaled and reverted with the rest.
            plan = tune_plan.build(tune_plan.Request(cc=cc, netns=ns, allow_host=True), env)
            if plan.changes:
                entries.append(tune_apply.apply(plan, env, ["netdiag", "bench", "p2p"]).id)
        yield
    finally:
        for eid in reversed(entries):
            try:
                tune_apply.revert(env, eid)
            except NetdiagError as e:
                notes.append(f"tune entry {eid} not reverted ({e}): run `netdiag tune --revert`")


def check_cc(ccs: tuple[str, ...]) -> None:
    """Every name is a congestion control this kernel has (tune's one check; tune allows it
    in namespaces when needed)."""
    for cc in ccs:
        kernel_cc.require(cc)
