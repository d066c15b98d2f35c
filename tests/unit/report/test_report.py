"""Report renderer: plots only what a file holds, self-contained HTML, comparison joins rows."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from netdiag.cli.main import main
from netdiag.report import plots, tables
from tests.unit.report import sample

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_every_plot_renders_from_a_full_file() -> None:
    rendered = plots.render([("", sample.p2p_result())])
    assert [p.name for p in rendered] == [name for name, _, _ in plots.PLOTS]
    assert all(p.png.startswith(PNG_MAGIC) and len(p.png) > 5000 for p in rendered)


def test_plots_only_of_series_present() -> None:
    doc = sample.p2p_result(with_transport=False)
    names = [p.name for p in plots.render([("", doc)])]
    assert names == ["propagation_cdf", "sync_progress"]
    empty = sample.p2p_result(with_transport=False)
    empty["raw"] = {}
    assert plots.render([("", empty)]) == []


def test_compare_tables_join_rows_on_their_string_columns() -> None:
    a, b = sample.p2p_result(), sample.p2p_result(slow=2.0)
    t = {x.title: x for x in tables.compare_tables(a, b)}["propagation (A vs B)"]
    assert t.columns == ["variant", "kind", "figure", "A", "B", "B/A"]
    rows = [dict(zip(t.columns, r, strict=True)) for r in t.rows]
    p99 = next(r for r in rows if r["variant"] == "bbr" and r["figure"] == "p99_ms")
    assert (p99["A"], p99["B"], p99["B/A"]) == (60, 120, 2.0)


def test_cli_html_is_self_contained_and_carries_every_plot(tmp_path: Path) -> None:
    f = sample.write(tmp_path / "r.json")
    out = tmp_path / "out" / "r.html"
    pngs = tmp_path / "png"
    rc = main(["report", str(f), "--html", str(out), "--png-dir", str(pngs)])
    assert rc == 0
    page = out.read_text()
    imgs = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(imgs) == len(plots.PLOTS)
    assert all(base64.b64decode(i).startswith(PNG_MAGIC) for i in imgs)
    assert "http://" not in page and "https://" not in page  # nothing fetched from outside
    assert "<h3>propagation</h3>" in page
    assert sorted(p.name for p in pngs.iterdir()) == sorted(f"{n}.png" for n, _, _ in plots.PLOTS)


def test_cli_compare_json(tmp_path: Path) -> None:
    a = sample.write(tmp_path / "a.json")
    b = sample.write(tmp_path / "b.json", slow=2.0)
    res = CliRunner().invoke(
        __import__("netdiag.cli.report", fromlist=["report"]).report, [str(a), str(b), "--json"]
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    sync = next(t for t in out["tables"] if t["title"] == "sync (A vs B)")
    cubic = next(r for r in sync["rows"] if r["variant"] == "cubic" and r["figure"] == "sync_s")
    assert abs(cubic["B/A"] - 2.0) < 1e-9


def test_cli_rejects_bad_file_with_exit_2(tmp_path: Path, capsys: object) -> None:
    f = tmp_path / "bad.json"
    f.write_text('{"schema_version": 1}')
    assert main(["report", str(f)]) == 2


def test_wide_summary_tables_are_turned_for_the_terminal() -> None:
    from rich.console import Console

    from netdiag.report import terminal

    wide = tables.Table(
        "propagation",
        ["variant", "kind", "p50_ms", "p90_ms", "p99_ms", "max_ms", "delivery_ratio"],
        [["cubic", "block", 1.0, 2.0, 3.0, 4.0, 1.0], ["bbr", "block", 0.5, 1.0, 1.5, 2.0, 1.0]],
    )
    console = Console(record=True, width=100)
    terminal.print_tables(console, [wide])
    text = console.export_text()
    assert "cubic block" in text and "bbr block" in text  # one column per row
    assert any(line.split()[:1] == ["p99_ms"] and "3.00" in line for line in text.splitlines())


def test_unwritable_html_path_is_one_line_before_anything_is_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from netdiag.cli.main import main

    result = sample.write(tmp_path / "r.json")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["report", str(result), "--html", str(blocker / "r.html")]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.splitlines() == [
        f"netdiag: error: cannot write --html {blocker / 'r.html'}: {blocker} is not a writable "
        "directory — give --html a path in a directory you can write"
    ]
