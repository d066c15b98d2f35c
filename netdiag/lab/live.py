"""Changing a running lab's links from any process (`netdiag lab link set`, benchmarks).

The lab's state file is the record of truth: it holds each link's shape as
`LinkShape.as_dict` wrote it; `shape_of` reads it back, so an update changes only the fields
given and keeps the rest (a BDP-sized queue keeps following the new rate x delay).

A calibrated link (`calibrate.py`) also records `correction_us`, the latency the link adds by
itself: the engine is given the recorded delay minus that, the record keeps the configured one.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from netdiag.errors import InputError
from netdiag.lab import engines, state
from netdiag.lab.topology import DEFAULT_MTU, LinkShape


def shape_of(recorded: dict[str, Any]) -> LinkShape:
    """The LinkShape a state record's `shape` (from `LinkShape.as_dict`) describes."""
    queue_bdp = float(recorded.get("queue_bdp") or 0.0)
    return LinkShape(
        delay_s=float(recorded["delay_us"]) / 1e6,
        jitter_s=float(recorded["jitter_us"]) / 1e6,
        rate_bps=int(recorded["rate_bps"]),
        loss=float(recorded["loss"]),
        queue_pkts=0 if queue_bdp else int(recorded["queue_pkts"]),
        queue_bdp=queue_bdp or 1.0,
    )


def set_link_record(name: str, index: int, shape: LinkShape, root: Path | None = None) -> None:
    """Give link `index` of running lab `name` this shape: the engine first, then the record."""
    with state.locked(name, root):
        rec = _read(name, root)
        _apply(rec, rec["links"][index], shape)
        state.write(rec, root)


def update_link(
    name: str,
    a: str,
    b: str,
    *,
    root: Path | None = None,
    delay_s: float | None = None,
    jitter_s: float | None = None,
    rate_bps: int | None = None,
    loss: float | None = None,
    queue: tuple[int, float] | None = None,
) -> tuple[LinkShape, int]:
    """Change the given fields of the live link a<->b; returns (new shape, the lab's MTU).
    `queue` is (packets, 0) or (0, BDP multiple), as `units.queue_spec` parses it."""
    with state.locked(name, root):
        rec = _read(name, root)
        link = rec["links"][link_index(rec, a, b)]
        shape = shape_of(link["shape"]).with_changes(
            delay_s=delay_s, jitter_s=jitter_s, rate_bps=rate_bps, loss=loss
        )
        if queue is not None:
            pkts, bdp = queue
            shape = shape.with_changes(queue_pkts=pkts, queue_bdp=bdp or 1.0)
        _apply(rec, link, shape)
        state.write(rec, root)
    return shape, int(rec.get("mtu", DEFAULT_MTU))


def link_index(rec: dict[str, Any], a: str, b: str) -> int:
    """Index of the link a<->b in a lab's state record (either order)."""
    for i, ln in enumerate(rec.get("links", [])):
        if {ln["a"], ln["b"]} == {a, b}:
            return i
    raise InputError(f"lab {rec.get('name')} has no link {a} <-> {b}", "see `netdiag lab status`")


def _read(name: str, root: Path | None) -> dict[str, Any]:
    rec = state.read(name, root)
    if rec is None:
        raise InputError(
            f"no lab named {name!r} is up", f"labs up: {', '.join(state.names(root)) or 'none'}"
        )
    return rec


def effective(shape: LinkShape, correction_us: float) -> LinkShape:
    """What the engine is told: the configured delay less the link's own measured latency."""
    if not correction_us:
        return shape
    return replace(shape, delay_s=max(0.0, shape.delay_s - correction_us / 1e6))


def _apply(rec: dict[str, Any], link: dict[str, Any], shape: LinkShape) -> None:
    mtu = int(rec.get("mtu", DEFAULT_MTU))
    eng = engines.for_link(rec["engine"], link.get("kind"))
    eng.set(link, effective(shape, float(link.get("correction_us") or 0.0)), mtu)
    new = shape.as_dict(mtu)
    timing = ("delay_us", "jitter_us", "rate_bps")
    if link.get("calibration") and any(link["shape"].get(k) != new[k] for k in timing):
        link["calibration"]["stale"] = True  # measured for the old shape, until recalibrated
    link["shape"] = new


def set_correction(name: str, index: int, correction_us: float, root: Path | None = None) -> None:
    """Subtract `correction_us` from link `index`'s configured delay from now on."""
    with state.locked(name, root):
        rec = _read(name, root)
        link = rec["links"][index]
        link["correction_us"] = correction_us
        _apply(rec, link, shape_of(link["shape"]))
        state.write(rec, root)


def save_calibrations(name: str, cals: dict[int, dict[str, Any]], root: Path | None = None) -> None:
    with state.locked(name, root):
        rec = _read(name, root)
        for i, cal in cals.items():
            rec["links"][i]["calibration"] = cal
        state.write(rec, root)
