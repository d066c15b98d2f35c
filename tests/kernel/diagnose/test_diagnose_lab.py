"""The verdict engine on real kernel TCP in a lab: verdicts and ordering only (no absolute
rates or times — those are `netdiag bench diagnose` figures)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest

from netdiag.bench import diagnose as bench
from netdiag.cli.main import main
from netdiag.lab import Lab, two_node
from tests.conftest import missing_tool

pytestmark = pytest.mark.skipif(bool(missing_tool("iperf3")), reason=str(missing_tool("iperf3")))

WINDOW_S = 2.0


def scenario(name: str) -> bench.Scenario:
    return next(s for s in bench.SCENARIOS if s.name == name)


_DEFAULTS: dict[str, dict[tuple[str, str], str]] = {}


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab.up(two_node(0.02, 50_000_000, name="diagt", engine="userspace")) as lab:
        # the namespaces' own buffer settings, read once before any scenario changes them
        out = {}
        for node in ("a", "b"):
            for name in ("net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"):
                value = lab.exec(node, ["sysctl", "-n", name]).stdout.split()
                out[(node, name)] = " ".join(value)
        _DEFAULTS[lab.name] = out
        yield lab


def defaults(lab: Lab) -> dict[tuple[str, str], str]:
    return dict(_DEFAULTS[lab.name])


@pytest.mark.parametrize(
    "name",
    [
        "idle-cubic-20ms",
        "app-2M-on-50M-cubic",
        "sndbuf-64k-cubic-50ms",
        "rwnd-64k-cubic-50ms",
        "accept-backlog2-20ms",
    ],
)
def test_scenario_gets_its_verdict(lab: Lab, name: str) -> None:
    sc = replace(scenario(name), warmup_s=2.0)
    port = 5400 + bench.SCENARIOS.index(scenario(name))
    o = bench.run_scenario(lab, sc, WINDOW_S, port, defaults(lab))
    assert o.predicted == sc.expect, o.finding
    assert o.finding is not None and o.finding.evidence


def test_a_window_limited_flow_is_slower_and_named(lab: Lab) -> None:
    """Side by side on one link: the rwnd-capped flow delivers less than the free flow, and
    only the capped one is called rwnd-limited."""
    d = defaults(lab)
    free = bench.run_scenario(
        lab, replace(scenario("path-cubic-20ms-30M"), warmup_s=2.0), WINDOW_S, 5450, d
    )
    capped_sc = replace(
        scenario("path-cubic-20ms-30M"),
        warmup_s=2.0,
        name="capped",
        sysctls=(("b", "net.ipv4.tcp_rmem", bench.SMALL_BUF),),
    )
    capped = bench.run_scenario(lab, capped_sc, WINDOW_S, 5451, d)
    assert capped.predicted == "rwnd-limited"
    assert free.predicted != "rwnd-limited"
    assert free.finding is not None and capped.finding is not None
    rate = lambda o: float(o.finding.evidence["send_rate_bps"] or 0)  # noqa: E731
    assert rate(capped) < 0.8 * rate(free)


def test_cli_json_and_fail_on(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    sc = replace(scenario("rwnd-64k-cubic-50ms"), warmup_s=2.0)
    port = 5460
    lab.set_link(
        "a",
        "b",
        delay_s=sc.delay_ms / 1000,
        rate_bps=int(sc.rate_mbit * 1e6),
        loss=0.0,
        queue_pkts=sc.queue_packets(),
    )
    d = defaults(lab)
    for (node, name), value in d.items():
        lab.sysctl(node, name, value)
    lab.sysctl("b", "net.ipv4.tcp_rmem", bench.SMALL_BUF)
    with bench.workload(lab, sc, 10, port):
        time.sleep(2)
        rc = main(
            [
                "diagnose",
                "--netns",
                lab.ns("a"),
                "--port",
                str(port),
                "--window",
                "2",
                "--json",
                "--fail-on",
                "warn",
            ]
        )
    doc = json.loads(capsys.readouterr().out)
    assert rc == 5
    verdicts = [f["verdict"] for f in doc["findings"] if f["scope"] == "connection"]
    assert "rwnd-limited" in verdicts
    for f in doc["findings"]:
        assert set(f) >= {
            "scope",
            "subject",
            "verdict",
            "severity",
            "confidence",
            "evidence",
            "fix",
        }
    sev = [{"info": 0, "warn": 1, "error": 2}[f["severity"]] for f in doc["findings"]]
    assert sev == sorted(sev, reverse=True)
    lab.sysctl("b", "net.ipv4.tcp_rmem", d[("b", "net.ipv4.tcp_rmem")])
