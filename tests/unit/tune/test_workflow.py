"""The tune workflow (measure -> plan -> apply -> verify) without the CLI, on a fake /proc/sys."""

from __future__ import annotations

import pytest

from netdiag.errors import InputError
from netdiag.tune import apply, plan, workflow
from netdiag.tune.env import TuneEnv
from netdiag.tune.journal import Entry
from tests.unit.tune.conftest import fake_read


def test_dry_run_plans_and_changes_nothing(fake_env: TuneEnv) -> None:
    seen: list[plan.Plan] = []
    result = workflow.run(
        plan.Request(sets=[("net.core.somaxconn", "8192")]),
        fake_env,
        workflow.Options(dry_run=True),
        ["netdiag", "tune"],
        on_plan=seen.append,
    )
    assert seen == [result.plan] and result.entry is None
    assert [(c.target, c.new) for c in result.plan.changes] == [("net.core.somaxconn", "8192")]
    assert fake_read(fake_env, "net/core/somaxconn").strip() == "4096"
    assert apply.journal_of(fake_env).entries() == []
    assert result.to_json()["dry_run"] is True and "entry" not in result.to_json()


def test_apply_journals_and_reports_the_entry(fake_env: TuneEnv) -> None:
    applied: list[Entry] = []
    result = workflow.run(
        plan.Request(sets=[("net.core.somaxconn", "8192")]),
        fake_env,
        workflow.Options(),
        ["netdiag", "tune"],
        on_applied=applied.append,
    )
    assert result.entry is not None and applied == [result.entry]
    assert result.entry.status == "applied" and result.failure() is None
    assert fake_read(fake_env, "net/core/somaxconn").strip() == "8192"
    assert result.to_json()["entry"] == result.entry.id


@pytest.mark.parametrize(
    ("req", "opts", "what"),
    [
        (plan.Request(), workflow.Options(), "nothing to tune"),
        (
            plan.Request(cc="cubic"),
            workflow.Options(revert_if_worse=True),
            "--revert-if-worse needs --verify",
        ),
    ],
)
def test_refused_requests_change_nothing(
    fake_env: TuneEnv, req: plan.Request, opts: workflow.Options, what: str
) -> None:
    with pytest.raises(InputError, match=what):
        workflow.run(req, fake_env, opts, [])
    assert apply.journal_of(fake_env).entries() == []
