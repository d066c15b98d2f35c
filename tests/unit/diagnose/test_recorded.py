"""The engine on real tcp_info sequences recorded from lab scenarios
(`netdiag bench diagnose --record DIR`): each window must get the verdict its scenario was
built to produce, from the kernel's evidence alone (no --rate, no route hints)."""

from __future__ import annotations

from pathlib import Path

import pytest

from netdiag.diagnose import REAL_LIMITS, VERDICTS, Context, build_window, judge, judge_samples

from .fixtures import all_fixtures, load

FIXTURES = all_fixtures()


def context_of(scenario: dict[str, object]) -> Context:
    """The namespace facts diagnose reads next to the samples: tcp_rmem/wmem max where the
    scenario set them in the namespace it was judged from (else the kernel defaults)."""
    rmem = wmem = None
    for node, name, value in scenario.get("sysctls") or []:  # type: ignore[attr-defined]
        if node == scenario["vantage"]:
            if name == "net.ipv4.tcp_rmem":
                rmem = int(value.split()[-1])
            if name == "net.ipv4.tcp_wmem":
                wmem = int(value.split()[-1])
    return Context(rmem_max=rmem or 6291456, wmem_max=wmem or 4194304)


def test_every_verdict_but_accept_queue_has_recorded_windows() -> None:
    # the listener verdict is judged from queues and counters, covered in test_host.py
    expected = {load(p)[0]["expect"] for p in FIXTURES}
    assert expected == set(VERDICTS) - {"accept-queue-overflow"}


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_recorded_window_gets_its_verdict(path: Path) -> None:
    scenario, samples = load(path)
    f = judge(build_window(samples), context_of(scenario))
    assert f.verdict == scenario["expect"], f.summary
    if scenario["expect"] in REAL_LIMITS:
        assert f.fix, "a real limit comes with a fix"
        assert f.severity in ("warn", "error")


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_verdict_does_not_depend_on_sampling_density(path: Path) -> None:
    # every other sample: the same window judged from half the evidence
    scenario, samples = load(path)
    thin = samples[::2] if len(samples[::2]) >= 5 else samples
    assert judge(build_window(thin), context_of(scenario)).verdict == scenario["expect"]


def test_rwnd_fix_sizes_from_the_operators_rate_when_given() -> None:
    _sc, samples = load(next(p for p in FIXTURES if p.stem.startswith("rwnd-64k")))
    w = build_window(samples)
    f = judge(w, Context(rate_bps=50_000_000))
    assert f.verdict == "rwnd-limited"
    # 2 × 50 Mbit/s × min RTT (the link's ~50 ms): ≈ 625 kB, not the flow's own ~80 kB
    assert w.min_rtt_us is not None
    want = 2 * int(50_000_000 / 8 * w.min_rtt_us / 1e6)
    assert f.evidence["bdp_bytes"] == want // 2
    assert want > 600_000
    own = judge(w, Context())
    assert own.evidence["bdp_bytes"] is not None
    assert int(own.evidence["bdp_bytes"]) < want // 4  # the flow's own rate understates it


def test_loss_limited_fix_is_the_exact_tune_command() -> None:
    for p in FIXTURES:
        sc, samples = load(p)
        if sc["expect"] == "loss-limited":
            f = judge_samples(samples)
            assert f.fix == f"netdiag tune --cc bbr --port {samples[-1].conn.rport}"
