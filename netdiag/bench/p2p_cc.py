"""Per-namespace default congestion control for the variants of a bench run.

Through tune's plan/journal/revert when tune is installed (it also allows the cc on the host
when a namespace may not pick it, journaled, so `netdiag tune --revert` recovers after a kill -9);
a direct sysctl write otherwise.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator
from pathlib import Path

from netdiag.errors import InputError, NetdiagError

CC_SYSCTL = "net.ipv4.tcp_congestion_control"


@contextlib.contextmanager
def namespace_cc(namespaces: list[str], cc: str, notes: list[str]) -> Iterator[None]:
    """Every namespace defaults to `cc` for the duration, through tune's plan/journal/revert.

    tune also adds `cc` to the host's allowed list when a namespace may not pick it, and
    journals that: after a kill -9, `netdiag tune --revert` restores the host. Without tune
    (not installed), the sysctl is written directly and only allowed algorithms are accepted.
    """
    try:
        from netdiag.tune import apply as tune_apply
        from netdiag.tune import plan as tune_plan
        from netdiag.tune.env import TuneEnv
    except ImportError:
        from netdiag.kernel import sysctl

        check_cc((cc,), need_allowed=True)
        for ns in namespaces:
            sysctl.write(CC_SYSCTL, cc, netns_name=ns)
        yield  # the namespaces die with the lab: nothing to restore
        return
    check_cc((cc,), need_allowed=False)
    env = TuneEnv.from_environ()
    entries: list[int] = []
    try:
        for ns in namespaces:
            plan = tune_plan.build(tune_plan.Request(cc=cc, netns=ns), env)
            if plan.changes:
                entries.append(tune_apply.apply(plan, env, ["netdiag", "bench", "p2p"]).id)
        yield
    finally:
        for eid in reversed(entries):
            try:
                tune_apply.revert(env, eid)
            except NetdiagError as e:
                notes.append(f"tune entry {eid} not reverted ({e}): run `netdiag tune --revert`")


def have_tune() -> bool:
    try:
        return importlib.util.find_spec("netdiag.tune.apply") is not None
    except ModuleNotFoundError:
        return False


def check_cc(ccs: tuple[str, ...], need_allowed: bool = True) -> None:
    allowed = Path("/proc/sys/net/ipv4/tcp_allowed_congestion_control").read_text().split()
    available = Path("/proc/sys/net/ipv4/tcp_available_congestion_control").read_text().split()
    for cc in ccs:
        if not need_allowed:
            allowed.append(cc)
        if cc not in available:
            raise InputError(
                f"congestion control {cc!r} is not available in this kernel",
                f"use one of {', '.join(available)} (modprobe tcp_{cc})",
            )
        if cc not in allowed:
            raise InputError(
                f"congestion control {cc!r} is not allowed in namespaces",
                f"`netdiag tune --cc {cc}` or add it to net.ipv4.tcp_allowed_congestion_control",
            )
