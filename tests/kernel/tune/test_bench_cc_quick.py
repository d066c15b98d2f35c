"""CI variant of `netdiag bench cc`: one loss value, short runs; checks the result schema and
that the tuned column's connections really used bbr. No timing assertions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from netdiag.report import results
from tests.conftest import missing_bcc, missing_tool
from tests.kernel.tune.conftest import raw, run

pytestmark = pytest.mark.skipif(
    bool(missing_tool("iperf3", "ss") or missing_bcc()),
    reason=str(missing_tool("iperf3", "ss") or missing_bcc()),
)


@pytest.mark.slow
def test_bench_cc_quick_schema(tmp_path: Path, state: dict[str, str]) -> None:
    allowed = raw("net.ipv4.tcp_allowed_congestion_control")
    out = tmp_path / "cc.json"
    p = run(["bench", "cc", "--quick", "--seconds", "2", "--out", str(out)], state, timeout=180)
    assert "cc vs random loss" in p.stdout  # the table printed (its cells may wrap)
    res = results.load(out)  # the one result format, schema-checked
    meta = res["metadata"]
    assert meta["benchmark"] == "cc" and meta["link"] == {
        "rate_bps": 100_000_000,
        "rtt_us": 100_000,
        "queue": "1bdp",
    }
    assert meta["variants"] == ["cubic", "bbr", "tuned"]
    rows = {r["variant"]: r for r in res["summary"]["cc"]}
    assert set(rows) == {"cubic", "bbr", "tuned"}
    for cc, row in rows.items():
        assert row["case"] == "loss 1%" and row["loss"] == 0.01, row
        assert row["ideal_bps"] == 99_000_000
        assert row["goodput_bps"] > 0 and 0 < row["ratio_to_ideal"] < 1.2, (cc, row)
    assert rows["cubic"]["cc_used"] == "cubic" and rows["bbr"]["cc_used"] == "bbr", rows
    assert rows["tuned"]["cc_used"] == "bbr"  # the sockops policy chose it, not iperf3
    [ratio] = res["summary"]["bbr_over_cubic"]
    assert ratio["ratio"] == pytest.approx(
        rows["bbr"]["goodput_bps"] / rows["cubic"]["goodput_bps"], abs=0.01
    )
    # the bench reverted its tuning: journal entries reverted, host list restored
    show = json.loads(run(["tune", "--show", "--json"], state).stdout)
    assert show["live"] == [] and show["sockops_links"] == []
    assert {e["status"] for e in show["journal"]} == {"reverted"}
    assert raw("net.ipv4.tcp_allowed_congestion_control") == allowed
