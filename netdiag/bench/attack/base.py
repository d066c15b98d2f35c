"""What an attack is: a module with ``ATTACK``, an object that attacks a running cluster.

The runner (runner.py) does everything common — RSS and heights before, during and after;
chain growth against a control cluster running at the same time; survival; tracebacks in the
node logs — so an attack module only attacks and reports what it saw. Adding an attack is one
module in this package listed in ``netdiag.bench.attack.ATTACKS``, or any importable module
passed with ``--module`` (see docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from netdiag.bench.attack.cluster import Cluster

Figure = str | int | float | bool | None


@dataclass
class AttackContext:
    """What an attack gets: the cluster under attack, where to attack from, for how long."""

    cluster: Cluster
    source_ip: str  # a loopback address of its own (bans aimed at it hit nobody else)
    duration_s: float
    quick: bool
    progress: Callable[[str], None]  # one short line of progress (shown on stderr)
    target_index: int = 0  # the node whose RSS is reported and that single-node attacks hit


@dataclass
class Outcome:
    """What the attack observed. ``banned``: None when bans do not apply to this attack.
    ``defended``: the attack's own verdict beyond survival (None: judged by the runner from
    growth and RSS only). ``why``: one line explaining the verdict. ``error``: the attack
    could not be carried out, so there is no verdict (reported as defended = null)."""

    banned: bool | None = None
    defended: bool | None = None
    why: str = ""
    figures: dict[str, Figure] = field(default_factory=dict)
    error: str | None = None  # the attack could not run (e.g. the node lacks a lab hook)
    # the node's RSS (bytes) once warmed up, measured by the attack before its main phase; when
    # set, the runner judges ``rss_bound`` against it instead of the cold start (mempool_flood)
    rss_baseline: int | None = None


class Attack(Protocol):
    name: str
    summary: str  # one line: what it does and what a defended node does
    rss_bound: float | None  # after/before RSS ratio a defended node stays within (None: n/a)
    growth_bound: float | None  # chain growth vs control a defended node keeps (None: n/a)
    # Optional: ``warm_bound`` (float: warm/before RSS a defended node stays within when the
    # attack measures a warm baseline), ``duration_factor`` (float, x --duration) and
    # ``leaves_cluster_degraded`` (bool: the runner replaces the target cluster with a fresh
    # one after this attack, e.g. when honest nodes rightly ban one of its validators for the
    # rest of the run).

    def run(self, ctx: AttackContext) -> Outcome: ...


class AsyncAttack:
    """The frame of an attack written as a coroutine: ``run`` drives ``_run`` on a fresh event
    loop. Bounds default to None (not judged); a subclass sets ``name``, ``summary``, the
    bounds it is judged by, and ``_run``."""

    name: str
    summary: str
    rss_bound: float | None = None
    growth_bound: float | None = None

    def run(self, ctx: AttackContext) -> Outcome:
        return asyncio.run(self._run(ctx))

    async def _run(self, ctx: AttackContext) -> Outcome:
        raise NotImplementedError
