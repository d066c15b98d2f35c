"""The one way a benchmark's figures become a result file (docs/results-schema.md).

Every `netdiag bench …` builds its result with `report.results.ResultBuilder` through the
helpers here: `new()` starts one with the run's parameters, `table()` turns a benchmark's
nested figures into flat summary rows, and `default_out()` puts the file under `results/`
(or `$NETDIAG_RESULTS`) rather than the current directory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from netdiag.report.results import ResultBuilder, Row, Scalar

RESULTS_ENV = "NETDIAG_RESULTS"


def results_dir() -> Path:
    return Path(os.environ.get(RESULTS_ENV) or "results")


def default_out(name: str) -> Path:
    """results/bench-NAME.json (the directory is made when the file is saved)."""
    return results_dir() / f"bench-{name}.json"


def new(
    benchmark: str,
    parameters: Mapping[str, Any],
    *,
    seed: int | None = None,
    link_engine: str | None = None,
    variants: list[str] | None = None,
    **metadata: Any,
) -> ResultBuilder:
    return ResultBuilder(
        benchmark,
        dict(parameters),
        seed=seed,
        link_engine=link_engine,
        variants=list(variants or []),
        metadata=metadata,
    )


def flat(d: Mapping[str, Any], prefix: str = "") -> Row:
    """Nested figures -> one flat row: {"a": {"b": 1}} -> {"a.b": 1}; lists of scalars
    become one comma-separated string (a row holds scalars only)."""
    out: Row = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flat(v, f"{key}."))
        elif isinstance(v, list | tuple):
            if all(scalar(x) for x in v):
                out[key] = ",".join(str(x) for x in v)
        elif scalar(v):
            out[key] = v
    return out


def scalar(v: Any) -> bool:
    return v is None or isinstance(v, str | int | float | bool)


def scalar_or_none(v: Any) -> Scalar:
    return v if scalar(v) else None
