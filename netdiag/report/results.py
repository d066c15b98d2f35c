"""One JSON result file per benchmark run: build, save, load and validate.

The layout follows Flent's (``metadata`` + ``x_values`` + ``results``) so that time series line up
on one x axis, and adds what Flent lacks: ``raw`` record tables (one dict per observation, e.g.
one per message arrival) and ``summary`` tables (rows of scalars, ready to print). Every
``netdiag bench …`` command writes this format; docs/results-schema.md is the reference.

Generic on purpose: a benchmark that runs several configurations side by side (``--cc
cubic,bbr``) labels its records, rows and series with a ``variant`` and lists the variants in
``metadata.variants``; nothing here knows about p2p, cc or probes.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import json
import math
import os
import platform
import socket
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netdiag import __version__
from netdiag.errors import InputError

SCHEMA_VERSION = 1
"""Bumped only on incompatible change; additive fields keep the version."""

Scalar = str | int | float | bool | None
Row = dict[str, Scalar]

REQUIRED_METADATA: dict[str, type | tuple[type, ...]] = {
    "benchmark": str,
    "netdiag_version": str,
    "kernel": str,
    "host": str,
    "start_time": str,
    "parameters": dict,
    "seed": (int, type(None)),
    "link_engine": (str, type(None)),
    "variants": list,
}

_FIX = "regenerate it with the `netdiag bench …` command that made it, or fix it by hand"


def utc_now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def host_metadata(benchmark: str) -> dict[str, Any]:
    """The facts about this host and netdiag every result carries (parameters come later)."""
    return {
        "benchmark": benchmark,
        "netdiag_version": __version__,
        "kernel": platform.release(),
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count() or 0,
        "command": " ".join(sys.argv),
        "start_time": utc_now_iso(),
    }


@dataclass
class ResultBuilder:
    """Collects a run's observations, then writes them as one result file.

    ``sample(series, t_s, value)`` records a point of a time series (t_s = seconds since the
    run's start, shared by all series); ``series_meta`` says what a series is (its ``metric``
    and labels such as ``link`` or ``variant``), so a renderer can group series without parsing
    their names.
    """

    benchmark: str
    parameters: dict[str, Any]
    seed: int | None = None
    link_engine: str | None = None
    variants: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    _series: dict[str, dict[float, float | None]] = field(default_factory=dict)
    series_meta: dict[str, dict[str, Scalar]] = field(default_factory=dict)
    raw: dict[str, list[Row]] = field(default_factory=dict)
    summary: dict[str, list[Row]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        base = host_metadata(self.benchmark)
        base.update(self.metadata)
        self.metadata = base

    def sample(self, series: str, t_s: float, value: float | None, **labels: Scalar) -> None:
        # ms resolution on the shared axis: samples taken in one sweep land on one x value
        self._series.setdefault(series, {})[round(t_s, 3)] = _finite(value)
        if labels or series not in self.series_meta:
            self.series_meta.setdefault(series, {}).update(labels)

    def record(self, table: str, row: Mapping[str, Scalar]) -> None:
        self.raw.setdefault(table, []).append(dict(row))

    def add_summary(self, table: str, row: Mapping[str, Scalar]) -> None:
        self.summary.setdefault(table, []).append(dict(row))

    def to_dict(self) -> dict[str, Any]:
        xs = sorted({t for pts in self._series.values() for t in pts})
        results = {name: [pts.get(x) for x in xs] for name, pts in sorted(self._series.items())}
        meta = dict(self.metadata)
        meta.update(
            parameters=self.parameters,
            seed=self.seed,
            link_engine=self.link_engine,
            variants=list(self.variants),
            end_time=utc_now_iso(),
        )
        doc = {
            "schema_version": SCHEMA_VERSION,
            "metadata": meta,
            "x_values": xs,
            "results": results,
            "series_meta": {k: v for k, v in sorted(self.series_meta.items()) if k in results},
            "raw": self.raw,
            "summary": self.summary,
        }
        validate(doc, "<built result>")
        return doc

    def save(self, path: str | Path) -> Path:
        return save(self.to_dict(), path)


def _finite(value: float | None) -> float | None:
    # JSON has no NaN/inf; a missing measurement is null
    if value is None or isinstance(value, bool):
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def save(doc: Mapping[str, Any], path: str | Path) -> Path:
    """Write atomically (temp file + rename): a crash never leaves half a result file."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=1, sort_keys=False, allow_nan=False)
            f.write("\n")
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def load(path: str | Path) -> dict[str, Any]:
    """Read and validate a result file; raise InputError saying what is wrong and where."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise InputError(
            f"result file {p} does not exist", "pass the path a bench run printed"
        ) from None
    except OSError as e:
        raise InputError(
            f"cannot read result file {p}: {e.strerror}", "check its permissions"
        ) from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(
            f"result file {p} is not JSON (line {e.lineno}, column {e.colno}: {e.msg})", _FIX
        ) from None
    validate(doc, str(p))
    return doc  # type: ignore[no-any-return]


def validate(doc: Any, source: str = "<result>") -> None:
    """Check a decoded result document against schema version 1."""

    def bad(where: str, what: str) -> InputError:
        return InputError(f"result file {source} is invalid: {where} {what}", _FIX)

    if not isinstance(doc, dict):
        raise bad("the top level", f"must be an object, not {type(doc).__name__}")
    ver = doc.get("schema_version")
    if not isinstance(ver, int) or isinstance(ver, bool):
        raise bad("schema_version", "is missing or not an integer")
    if ver != SCHEMA_VERSION:
        raise InputError(
            f"result file {source} has schema_version {ver}; this netdiag reads {SCHEMA_VERSION}",
            "use the netdiag version that wrote it, or rerun the benchmark",
        )
    for key, typ in (
        ("metadata", dict),
        ("x_values", list),
        ("results", dict),
        ("raw", dict),
        ("summary", dict),
    ):
        if not isinstance(doc.get(key), typ):
            raise bad(key, f"is missing or not a{'n object' if typ is dict else ' list'}")
    meta = doc["metadata"]
    for key, mtyp in REQUIRED_METADATA.items():
        if key not in meta:
            raise bad(f"metadata.{key}", "is missing")
        if not isinstance(meta[key], mtyp):
            raise bad(f"metadata.{key}", f"has the wrong type ({type(meta[key]).__name__})")
    xs = doc["x_values"]
    if not all(_is_num(x) for x in xs):
        raise bad("x_values", "must hold only numbers")
    if any(b < a for a, b in itertools.pairwise(xs)):
        raise bad("x_values", "must be sorted ascending")
    for name, values in doc["results"].items():
        if not isinstance(values, list):
            raise bad(f"results[{name!r}]", "must be a list")
        if len(values) != len(xs):
            raise bad(f"results[{name!r}]", f"has {len(values)} values but x_values has {len(xs)}")
        if not all(v is None or _is_num(v) for v in values):
            raise bad(f"results[{name!r}]", "must hold only numbers or null")
    series_meta = doc.get("series_meta", {})
    if not isinstance(series_meta, dict):
        raise bad("series_meta", "must be an object")
    for name, labels in series_meta.items():
        if name not in doc["results"]:
            raise bad(f"series_meta[{name!r}]", "describes a series that results lacks")
        _check_row(labels, f"series_meta[{name!r}]", bad)
    for section in ("raw", "summary"):
        for table, rows in doc[section].items():
            if not isinstance(rows, list):
                raise bad(f"{section}[{table!r}]", "must be a list of objects")
            for i, row in enumerate(rows):
                _check_row(row, f"{section}[{table!r}][{i}]", bad)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _check_row(row: Any, where: str, bad: Any) -> None:
    if not isinstance(row, dict):
        raise bad(where, "must be an object")
    for k, v in row.items():
        if v is not None and not isinstance(v, str | int | float | bool):
            raise bad(f"{where}.{k}", f"must be a scalar, not {type(v).__name__}")


# Helpers for readers (the report, tests): select by labels instead of parsing names.


def series_where(doc: Mapping[str, Any], **labels: Scalar) -> dict[str, list[float | None]]:
    """The series whose series_meta carries every given label value."""
    meta = doc.get("series_meta", {})
    return {
        name: values
        for name, values in doc["results"].items()
        if all(meta.get(name, {}).get(k) == v for k, v in labels.items())
    }


def rows(doc: Mapping[str, Any], section: str, table: str) -> list[Row]:
    out: list[Row] = doc.get(section, {}).get(table, [])
    return out


def variants(doc: Mapping[str, Any]) -> Sequence[str]:
    v: list[str] = doc["metadata"].get("variants", [])
    return v
