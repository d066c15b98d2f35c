"""bench attack's extension point and verdict rules, without processes."""

from __future__ import annotations

import sys
import types

import pytest

from netdiag.bench.attack.base import AttackContext, Outcome
from netdiag.bench.attack.runner import ATTACKS, judge, load_attack
from netdiag.errors import InputError


class _Noop:
    name = "noop"
    summary = "does nothing"
    rss_bound: float | None = 1.25
    growth_bound: float | None = 0.9

    def run(self, ctx: AttackContext) -> Outcome:
        return Outcome(why="nothing")


def test_every_shipped_attack_loads_and_names_itself() -> None:
    for name in ATTACKS:
        attack = load_attack(name)
        assert attack.name == name and attack.summary


def test_an_outside_module_is_an_attack(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = types.ModuleType("my_attack_mod")
    mod.ATTACK = _Noop()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "my_attack_mod", mod)
    assert load_attack("my_attack_mod").name == "noop"
    bare = types.ModuleType("not_an_attack")
    monkeypatch.setitem(sys.modules, "not_an_attack", bare)
    with pytest.raises(InputError, match="no ATTACK"):
        load_attack("not_an_attack")
    with pytest.raises(InputError, match="cannot import"):
        load_attack("no.such.module_xyz")


def test_judge_names_every_failed_bound() -> None:
    a = _Noop()
    ok, why = judge(a, Outcome(), True, 0, 1.0, 1.1)
    assert ok and why == ""
    ok, why = judge(a, Outcome(), True, 0, 0.5, 2.0)
    assert not ok and "growth 0.50" in why and "RSS after/before 2.00" in why
    ok, why = judge(a, Outcome(defended=False), False, 3, None, None)
    assert not ok
    assert "died" in why and "3 tracebacks" in why and "own check" in why and "None" in why
