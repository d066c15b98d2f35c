"""Runs attacks one after another against a target cluster, with a control cluster alongside.

Both clusters are real `netdiag node run` processes on loopback, started together; only the
target is attacked. Chain growth during an attack is the target's new blocks over the
control's in the same seconds, so machine load (the attacker's CPU included) weighs on both
alike. Per attack: RSS of the attacked node before, peak during, and after a settle period;
survival (every target process alive and answering /status); tracebacks in the target logs;
whether the attacker ended up banned; and the attack's own verdict.
"""

from __future__ import annotations

import importlib
import os
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netdiag.bench.attack.base import Attack, AttackContext, Outcome
from netdiag.bench.attack.cluster import Cluster
from netdiag.errors import InputError
from netdiag.report.results import ResultBuilder, Row

ATTACKS: dict[str, str] = {  # run in this order; future_rounds last (it bans a validator)
    "tls_flood": "netdiag.bench.attack.tls_flood",
    "tls_garbage": "netdiag.bench.attack.tls_garbage",
    "lying_peer": "netdiag.bench.attack.lying_peer",
    "reconnect_ban": "netdiag.bench.attack.reconnect_ban",
    "malformed_frames": "netdiag.bench.attack.malformed_frames",
    "publish_flood": "netdiag.bench.attack.publish_flood",
    "sync_amplification": "netdiag.bench.attack.sync_amplification",
    "stalled_reader": "netdiag.bench.attack.stalled_reader",
    "stalled_small": "netdiag.bench.attack.stalled_small",
    "stalled_goodbye": "netdiag.bench.attack.stalled_goodbye",
    "slow_drip": "netdiag.bench.attack.slow_drip",
    "nested_json": "netdiag.bench.attack.nested_json",
    "slowloris": "netdiag.bench.attack.slowloris",
    "api_slowloris": "netdiag.bench.attack.api_slowloris",
    "api_stalled_reader": "netdiag.bench.attack.api_stalled_reader",
    "mempool_flood": "netdiag.bench.attack.mempool_flood",
    "slot_exhaustion": "netdiag.bench.attack.slot_exhaustion",
    "future_rounds": "netdiag.bench.attack.future_rounds",
}


def load_attack(module: str) -> Attack:
    """An attack module defines ``ATTACK`` (see base.py)."""
    try:
        mod = importlib.import_module(ATTACKS.get(module, module))
    except ImportError as e:
        raise InputError(
            f"cannot import attack module {module!r}: {e}",
            f"pass one of {', '.join(ATTACKS)} or an importable module that defines ATTACK",
        ) from e
    attack = getattr(mod, "ATTACK", None)
    if attack is None or not callable(getattr(attack, "run", None)):
        raise InputError(
            f"module {module!r} has no ATTACK with a run(ctx) method",
            "define ATTACK = YourAttack() as in netdiag/bench/attack/base.py",
        )
    return attack  # type: ignore[no-any-return]


@dataclass
class Params:
    attacks: list[str]
    duration_s: float = 30.0
    settle_s: float = 10.0
    slot_ms: int = 500
    validators: int = 3
    quick: bool = False
    workdir: Path = Path(".")


@dataclass
class Sampler:
    """Samples the target node's RSS and both clusters' heights on a thread."""

    target: Cluster
    control: Cluster
    node: int
    builder: ResultBuilder
    t0: float
    interval_s: float = 0.5
    peak_rss: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    attack: str = ""

    def start(self, attack: str) -> None:
        self.attack, self.peak_rss = attack, 0
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self) -> int:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        return self.peak_rss

    def _loop(self) -> None:
        while not self._stop.is_set():
            t = time.monotonic() - self.t0
            rss = self.target.nodes[self.node].rss_bytes()
            if rss is not None:
                self.peak_rss = max(self.peak_rss, rss)
            self.builder.sample(
                f"rss_bytes {self.target.nodes[self.node].name}",
                t,
                rss,
                metric="rss_bytes",
                node=self.target.nodes[self.node].name,
            )
            for role, c in (("target", self.target), ("control", self.control)):
                # a replaced target cluster continues the "target" series (from height ~0)
                self.builder.sample(
                    f"height {role}", t, c.max_height(), metric="height", cluster=role
                )
            self._stop.wait(self.interval_s)


def ensure_running(c: Cluster, timeout_s: float = 30.0) -> list[str]:
    """Restart nodes an attack left dead (same data dir); the names restarted."""
    restarted = []
    for n in c.nodes:
        if not n.alive():
            n.start()
            restarted.append(n.name)
    deadline = time.monotonic() + timeout_s
    while restarted and time.monotonic() < deadline:
        if all(n.status() is not None for n in c.nodes):
            break
        time.sleep(0.2)
    return restarted


def survived(c: Cluster, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        if not all(n.alive() for n in c.nodes):
            return False
        if all(n.status() is not None for n in c.nodes):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)


def judge(
    attack: Attack,
    outcome: Outcome,
    ok: bool,
    tracebacks: int,
    growth: float | None,
    rss_ratio: float | None,
    rss_vs: str = "before",
    warm_step: float | None = None,
) -> tuple[bool, str]:
    """Defended, and why not when it is not. ``rss_ratio`` is RSS after over ``rss_vs``: the
    cold start ("before") or the attack's own warm baseline ("warm"). ``warm_step`` (warm over
    before) is judged by the attack's ``warm_bound``: judging after against warm must not let a
    warm-up that is itself too large go unseen."""
    fails: list[str] = []
    if not ok:
        fails.append("a node died or stopped answering")
    if tracebacks:
        fails.append(f"{tracebacks} tracebacks in the node logs")
    if outcome.defended is False:
        fails.append("attack's own check")
    if attack.growth_bound is not None and (growth is None or growth < attack.growth_bound):
        fails.append(
            f"chain growth {growth if growth is None else f'{growth:.2f}'} of normal "
            f"< {attack.growth_bound:g}"
        )
    if attack.rss_bound is not None and (rss_ratio is None or rss_ratio > attack.rss_bound):
        fails.append(
            f"RSS after/{rss_vs} {rss_ratio if rss_ratio is None else f'{rss_ratio:.2f}'}"
            f" > {attack.rss_bound:g}"
        )
    warm_bound: float | None = getattr(attack, "warm_bound", None)
    if (
        rss_vs == "warm"
        and warm_bound is not None
        and (warm_step is None or warm_step > warm_bound)
    ):
        fails.append(
            f"RSS warm/before {warm_step if warm_step is None else f'{warm_step:.2f}'}"
            f" > {warm_bound:g}"
        )
    return not fails, "; ".join(fails)


def run_one(
    index: int,
    name: str,
    target: Cluster,
    control: Cluster,
    sampler: Sampler,
    p: Params,
    progress: Callable[[str], None],
) -> Row:
    attack = load_attack(name)
    restarted = ensure_running(target) + ensure_running(control)
    node = target.nodes[0]
    offsets = [n.log_size() for n in target.nodes]
    rss_before = node.rss_bytes()
    t_h0, c_h0 = target.max_height(), control.max_height()
    factor = 1.0 if p.quick else float(getattr(attack, "duration_factor", 1.0))
    duration = p.duration_s * factor
    ctx = AttackContext(
        cluster=target,
        source_ip=f"127.0.0.{20 + index}",
        duration_s=duration,
        quick=p.quick,
        progress=lambda s: progress(f"{name}: {s}"),
    )
    sampler.start(name)
    t_start = time.monotonic()
    try:
        outcome = attack.run(ctx)
    except Exception as e:  # an attack's own bug is reported, not fatal to the run
        outcome = Outcome(error=f"attack failed: {e!r} {traceback.format_exc(limit=2)[-200:]}")
    attack_s = time.monotonic() - t_start
    t_h1, c_h1 = target.max_height(), control.max_height()
    progress(f"{name}: settling {p.settle_s:g} s")
    time.sleep(p.settle_s)
    rss_after = node.rss_bytes()
    peak = max(sampler.stop(), rss_after or 0, rss_before or 0)
    ok = survived(target)
    tracebacks = sum(
        n.log_since(off).count("Traceback") for n, off in zip(target.nodes, offsets, strict=True)
    )
    t_blocks = None if t_h0 is None or t_h1 is None else t_h1 - t_h0
    c_blocks = None if c_h0 is None or c_h1 is None else c_h1 - c_h0
    growth = t_blocks / c_blocks if t_blocks is not None and c_blocks else None
    rss_ratio = rss_after / rss_before if rss_after and rss_before else None
    warm = outcome.rss_baseline
    warm_ratio = rss_after / warm if rss_after and warm else None
    if warm is None:
        defended, failed = judge(attack, outcome, ok, tracebacks, growth, rss_ratio)
    else:
        step = warm / rss_before if rss_before else None
        defended, failed = judge(
            attack, outcome, ok, tracebacks, growth, warm_ratio, "warm", warm_step=step
        )
    mb = 1 << 20
    row: Row = {
        "attack": name,
        "survived": ok,
        "defended": None if outcome.error else defended,
        "attacker_banned": outcome.banned,
        "growth_ratio": None if growth is None else round(growth, 3),
        "blocks_attacked": t_blocks,
        "blocks_control": c_blocks,
        "rss_before_mb": None if rss_before is None else round(rss_before / mb, 1),
        "rss_peak_mb": round(peak / mb, 1) if peak else None,
        "rss_after_mb": None if rss_after is None else round(rss_after / mb, 1),
        "rss_after_ratio": None if rss_ratio is None else round(rss_ratio, 3),
        # the attack's warm baseline, when it measures one (judged against instead of before)
        "rss_warm_mb": None if warm is None else round(warm / mb, 1),
        "rss_after_warm_ratio": None if warm_ratio is None else round(warm_ratio, 3),
        "tracebacks": tracebacks,
        "attack_s": round(attack_s, 2),
        "host_load_1m": round(os.getloadavg()[0], 2),  # other work on the host during it
    }
    detail: Row = {
        "attack": name,
        "summary": attack.summary,
        "why": outcome.error or outcome.why,
        "error": outcome.error,
        "not_defended_because": failed or None,
        "source_ip": ctx.source_ip,
        "restarted_before": ",".join(restarted) or None,
        **{f"{k}": v for k, v in outcome.figures.items()},
    }
    sampler.builder.record("attacks", {**row, **detail})
    return row


def parameters(p: Params) -> dict[str, Any]:
    return {
        "attacks": list(p.attacks),
        "duration_s": p.duration_s,
        "settle_s": p.settle_s,
        "slot_ms": p.slot_ms,
        "validators": p.validators,
        "quick": p.quick,
    }


def run(p: Params, progress: Callable[[str], None]) -> ResultBuilder:
    """Start target and control clusters, run every attack, stop both; the result."""
    for name in p.attacks:  # fail on a bad name before starting six processes
        load_attack(name)
    builder = ResultBuilder("attack", parameters(p), variants=[])
    target = Cluster.create(p.workdir, "target", p.validators, p.slot_ms)
    control = Cluster.create(p.workdir, "control", p.validators, p.slot_ms)
    targets = [target]
    try:
        progress("starting target and control clusters")
        target.start()
        control.start()
        target.wait_producing(90)
        control.wait_producing(90)
        sampler = Sampler(target, control, 0, builder, time.monotonic())
        for i, name in enumerate(p.attacks):
            progress(f"{name}: attacking for {p.duration_s:g} s")
            row = run_one(i, name, target, control, sampler, p, progress)
            builder.add_summary("attacks", row)
            if getattr(load_attack(name), "leaves_cluster_degraded", False) and i + 1 < len(
                p.attacks
            ):
                progress(f"{name}: replacing the target cluster with a fresh one")
                target.stop()
                target = Cluster.create(p.workdir, f"target{i + 1}", p.validators, p.slot_ms)
                targets.append(target)
                target.start()
                target.wait_producing(90)
                sampler.target = target
            progress(
                f"{name}: survived={row['survived']} defended={row['defended']} "
                f"growth={row['growth_ratio']} banned={row['attacker_banned']}"
            )
    finally:
        progress("stopping clusters")
        target.stop()  # the current one; a replaced one was stopped when it was replaced
        control.stop()
    progress("verifying every attacked node's stored chain offline (netdiag node verify)")
    for c in targets:
        for row in c.verify_chains():
            builder.add_summary("chains", row)
    builder.metadata["workdir"] = str(p.workdir)
    return builder
