"""Every result file netdiag ever committed is readable by `netdiag report`; no Python reprs
reach a page; unequal offered load between compared variants is called out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from netdiag.bench import legacy, output
from netdiag.cli.main import main
from netdiag.report import results, tables
from netdiag.report.results import ResultBuilder
from tests.unit.report import sample

DOCS = Path(__file__).resolve().parents[3] / "docs"
COMMITTED = sorted([*DOCS.glob("results/*.json"), *DOCS.glob("bench-out/*.json")])


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.name)
def test_committed_result_files_are_in_the_one_format(path: Path) -> None:
    doc = results.load(path)  # raises on any schema error
    assert doc["summary"], "no summary tables"
    assert main(["report", str(path), "--json"]) == 0


def test_committed_cc_runs_compare_row_by_row(capsys: pytest.CaptureFixture[str]) -> None:
    a, b = DOCS / "results/bench-cc-run1.json", DOCS / "results/bench-cc-run2.json"
    assert main(["report", str(a), str(b), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    cc = next(t for t in out["tables"] if t["title"] == "cc (A vs B)")
    row = next(
        r
        for r in cc["rows"]
        if r["case"] == "loss 1%" and r["variant"] == "bbr" and r["figure"] == "goodput_bps"
    )
    assert row["A"] > 0 and row["B"] > 0 and row["B/A"] == pytest.approx(row["B"] / row["A"])


def test_legacy_json_is_converted_on_the_fly(tmp_path: Path) -> None:
    old = {
        "benchmark": "validate",
        "command": "netdiag bench validate --blocks 3",
        "started_unix_s": 1_700_000_000.0,
        "params": {"blocks": 3, "txs_per_block": 5, "rounds": 1},
        "host": {"cpus": 2},
        "results": {
            "ed25519_verify_per_s": 100.0,
            "tx_validate_per_s": 50.0,
            "block_validate_per_s": 2.0,
            "block_txs_validate_per_s": 10.0,
            "block_commit_per_s": 1.0,
            "block_commit_txs_per_s": 5.0,
            "tx_vs_raw_ratio": 0.5,
            "block_txs_vs_raw_ratio": 0.1,
            "commit_txs_vs_raw_ratio": 0.05,
        },
        "rounds": [{"raw": 100.0, "tx": 50.0}],
    }
    assert legacy.known(old)
    doc = legacy.convert(old, "old.json")
    results.validate(doc)
    assert doc["metadata"]["start_time"].startswith("2023-11-14T22:13:20")
    f = tmp_path / "old.json"
    f.write_text(json.dumps(old))
    assert main(["report", str(f)]) == 0
    assert not legacy.known({"schema_version": 1, "benchmark": "cc"})


def test_html_has_no_python_reprs_and_no_empty_heading(tmp_path: Path) -> None:
    b = ResultBuilder("demo", {"cc": ["cubic", "bbr"], "limit": None}, variants=["cubic", "bbr"])
    b.add_summary("t", {"variant": "cubic", "x_ms": 1.0})
    f = b.save(tmp_path / "r.json")
    out = tmp_path / "r.html"
    assert main(["report", str(f), "--html", str(out)]) == 0
    page = out.read_text()
    for repr_ in ("None", "['cubic', 'bbr']", "<h3></h3>", "True", "False"):
        assert repr_ not in page, repr_
    assert "cubic, bbr" in page


def test_offered_load_difference_is_warned_about(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = sample.p2p_result()
    doc["summary"]["validation"] = [
        {"variant": "cubic", "txs_planned": 400, "txs_sent": 392},
        {"variant": "bbr", "txs_planned": 400, "txs_sent": 269},
    ]
    (warning,) = tables.load_warnings([("", doc)])
    assert "bbr sent 269 of 400 planned" in warning and "cubic sent 392" in warning
    f = results.save(doc, tmp_path / "d.json")
    assert main(["report", str(f), "--html", str(tmp_path / "d.html")]) == 0
    assert "offered load differed" in capsys.readouterr().err
    assert "offered load differed" in (tmp_path / "d.html").read_text()
    even = [{"variant": v, "txs_planned": 400, "txs_sent": 390} for v in ("cubic", "bbr")]
    doc["summary"]["validation"] = even
    assert tables.load_warnings([("", doc)]) == []


def test_results_go_to_the_results_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(output.RESULTS_ENV, raising=False)
    assert output.default_out("sync") == Path("results/bench-sync.json")
    monkeypatch.setenv(output.RESULTS_ENV, "/tmp/r")
    assert output.default_out("cc") == Path("/tmp/r/bench-cc.json")


def test_flat_rows_hold_scalars_only() -> None:
    row = output.flat({"a": {"b": 1, "c": [1, 2]}, "d": "x", "e": [{"no": 1}]})
    assert row == {"a.b": 1, "a.c": "1,2", "d": "x"}


def test_a_variant_offered_off_plan_by_more_than_two_percent_is_flagged() -> None:
    doc = sample.p2p_result()
    doc["summary"]["validation"] = [
        {"variant": "cubic", "txs_planned": 400, "txs_offered": 306, "txs_sent": 306},
        {"variant": "bbr", "txs_planned": 400, "txs_offered": 396, "txs_sent": 396},
    ]
    short, differed = tables.load_warnings([("", doc)])
    assert "cubic offered 306 of 400 planned (-23.5%)" in short and "bbr offered" not in short
    assert "cubic sent 306 of 400" in differed
    # within 2 % of the plan and of each other: like for like
    doc["summary"]["validation"] = [
        {"variant": v, "txs_planned": 400, "txs_offered": 395, "txs_sent": s}
        for v, s in (("cubic", 395), ("bbr", 389))
    ]
    assert tables.load_warnings([("", doc)]) == []
    # one variant alone: only the plan is compared
    doc["summary"]["validation"] = [
        {"variant": "deployed", "txs_planned": 1200, "txs_offered": 1100, "txs_sent": 1100}
    ]
    (only,) = tables.load_warnings([("", doc)])
    assert "deployed offered 1100 of 1200 planned (-8.3%)" in only
