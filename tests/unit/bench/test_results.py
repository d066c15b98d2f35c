"""The result-file format: what the builder writes loads back; bad files fail with a clear error."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from netdiag.errors import InputError
from netdiag.report import results


def built() -> results.ResultBuilder:
    b = results.ResultBuilder(
        "p2p", {"nodes": 4}, seed=7, link_engine="userspace", variants=["cubic", "bbr"]
    )
    b.sample("srtt_us a-b cubic", 0.0, 100.0, metric="srtt_us", link="a-b", variant="cubic")
    b.sample("srtt_us a-b cubic", 1.0, 110.0)
    b.sample("cwnd_segs a-b cubic", 1.0004, 10, metric="cwnd_segs", link="a-b", variant="cubic")
    b.sample("cwnd_segs a-b cubic", 2.0, math.nan)
    b.record("propagation", {"variant": "cubic", "node": "b", "delay_us": 5, "lower_bound_us": 4})
    b.add_summary("propagation", {"variant": "cubic", "p99_ms": 1.5})
    return b


def test_round_trip_keeps_series_aligned_on_the_shared_axis(tmp_path: Path) -> None:
    path = built().save(tmp_path / "r.json")
    doc = results.load(path)
    assert doc["schema_version"] == results.SCHEMA_VERSION
    assert doc["x_values"] == [0.0, 1.0, 2.0]
    assert doc["results"]["srtt_us a-b cubic"] == [100.0, 110.0, None]
    # NaN is stored as null, samples within a millisecond share an x value
    assert doc["results"]["cwnd_segs a-b cubic"] == [None, 10.0, None]
    assert doc["metadata"]["seed"] == 7
    assert doc["metadata"]["variants"] == ["cubic", "bbr"]
    assert doc["metadata"]["kernel"] and doc["metadata"]["start_time"].endswith("Z")
    assert results.series_where(doc, metric="srtt_us", variant="cubic") == {
        "srtt_us a-b cubic": [100.0, 110.0, None]
    }
    assert results.rows(doc, "raw", "propagation")[0]["delay_us"] == 5
    assert not list(tmp_path.glob(".*tmp")), "atomic write left its temp file behind"


def _mutations() -> list[tuple[str, Any, str]]:
    return [
        ("schema_version", 99, "schema_version 99"),
        ("schema_version", "1", "schema_version is missing or not an integer"),
        ("x_values", [2.0, 1.0, 0.0], "x_values must be sorted"),
        ("results", {"s": [1.0]}, "has 1 values but x_values has 3"),
        ("results", {"s": ["a", None, None]}, "only numbers or null"),
        ("raw", {"t": [{"k": [1, 2]}]}, "raw['t'][0].k must be a scalar"),
        ("summary", {"t": "x"}, "summary['t'] must be a list"),
        ("series_meta", {"ghost": {}}, "series_meta['ghost'] describes a series"),
    ]


@pytest.mark.parametrize(("key", "value", "message"), _mutations())
def test_bad_files_are_rejected_with_what_and_where(
    tmp_path: Path, key: str, value: Any, message: str
) -> None:
    doc = built().to_dict()
    doc[key] = value
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(doc))
    with pytest.raises(InputError) as e:
        results.load(p)
    assert message in str(e.value)
    assert str(p) in str(e.value)
    assert e.value.fix


def test_missing_metadata_field_is_named(tmp_path: Path) -> None:
    doc = built().to_dict()
    del doc["metadata"]["link_engine"]
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(doc))
    with pytest.raises(InputError, match=r"metadata\.link_engine is missing"):
        results.load(p)


def test_not_json_and_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "x.json"
    p.write_text("{not json")
    with pytest.raises(InputError, match=r"is not JSON .line 1"):
        results.load(p)
    with pytest.raises(InputError, match="does not exist"):
        results.load(tmp_path / "nope.json")
