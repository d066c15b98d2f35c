"""Result files of older netdiag versions (one ad-hoc JSON layout per benchmark) converted to
the one result format, so `netdiag report` reads them and the committed files under docs/
could be converted. Each benchmark's own `to_result` does the work: a converted file holds
exactly what a fresh run of that version would have written."""

from __future__ import annotations

import datetime as dt
from typing import Any

from netdiag.report.results import ResultBuilder


def known(doc: Any) -> bool:
    return (
        isinstance(doc, dict)
        and "schema_version" not in doc
        and doc.get("benchmark")
        in (
            "cc",
            "emulator",
            "emulator-scale",
            "probes overhead",
            "probes accuracy",
            "validate",
            "sync",
        )
    )


def convert(doc: dict[str, Any], source: str) -> dict[str, Any]:
    """The result-format document of a legacy file (`known(doc)` must hold)."""
    from netdiag.bench import cc, emulator, probes, probes_accuracy, sync, validate

    name = doc["benchmark"]
    res: ResultBuilder
    if name == "cc":
        res = cc.to_result(doc)
    elif name in ("emulator", "emulator-scale"):
        res = emulator.to_result(doc)
    elif name == "probes overhead":
        res = probes.overhead_result(doc)
    elif name == "probes accuracy":
        res = probes_accuracy.accuracy_result(doc)
    elif name == "validate":
        fig = validate.Figures(**doc["results"])
        res = validate.to_result(fig, doc["rounds"], doc["params"])
    else:
        res = sync.to_result(dict(doc, link_engine=None), doc["params"])
    # the facts of the original run, not of this host and this moment
    host = doc.get("host") or {}
    started = doc.get("time", doc.get("started_unix_s"))
    res.metadata.update(
        command=doc.get("command") or f"(converted from {source})",
        converted_from=source,
        kernel=str(host.get("kernel") or "unknown"),
        host="unknown (converted)",
        cpu_count=host.get("cpus", doc.get("cpus", 0)),
        netdiag_version="unknown (converted)",
    )
    if isinstance(started, int | float):
        res.metadata["start_time"] = (
            dt.datetime.fromtimestamp(started, dt.UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z")
        )
    out = res.to_dict()
    out["metadata"].pop("end_time", None)  # unknown for a converted run
    return out
