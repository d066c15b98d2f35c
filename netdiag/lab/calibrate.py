"""Calibrated links: measure what a link adds beyond its configured delay, subtract it, and
report what is left (the residual) per link.

The link's own latency — the forwarder waking to read and to write, the receiving stack run
in its writer, timer overshoot — differs by host (+0.09 ms on one, +0.3-0.9 ms on another),
so it is measured, never assumed: `ping` across the link itself (from one end's namespace to
the other end's link address, never routed elsewhere), in short batches whose summaries keep
ping's µs precision. What a real link of that shape gives is its delay plus the probe's
serialization both ways; the excess of the fastest ping over that is the link's fixed
latency, and the link is given delay - that. The delay stays a floor, as on a real path (no
packet arrives earlier than configured: TCP's min_rtt, BBR's model and the lab's tests rely
on it); what is left is the variable part, the residual: the median of batch means minus the
expected RTT, measured again after the correction — what `lab status` shows (goal: 0.1 ms +
0.5 % of the delay). A second correction is made when the fastest ping still misses the
floor by more than MIN_STEP_US.

It measures an idle link (`lab up` calibrates before any node process starts); `lab link set
--no-calibrate` keeps the previous correction when the link carries traffic.
"""

from __future__ import annotations

import math
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netdiag.lab import live, state
from netdiag.lab.ping import summaries
from netdiag.lab.topology import LinkShape

PING_BYTES = 84  # IP packet of a default ping (56 data + 8 ICMP + 20 IP)
BATCHES = 6  # batch means per measurement; the median of them is the figure
COUNT = 5  # pings per batch
INTERVAL_S = 0.005
PARALLEL = 16  # links measured at once (each a short ping loop; the host has 2 cores)
MIN_STEP_US = 20.0  # a smaller error of the fastest ping is not worth another round
# a larger overhead means the link was busy (queued traffic), not that the link is slow:
# never subtract more than this
MAX_CORRECTION_US = 5000.0


# -- sans-IO: what the figures mean ---------------------------------------------------------
def expected_rtt_us(shape: LinkShape) -> float:
    """What ping sees on a real link of this shape: the delay plus the probe's serialization
    at the rate, both ways."""
    ser = 2 * PING_BYTES * 8 / shape.rate_bps * 1e6 if shape.rate_bps else 0.0
    return shape.delay_s * 1e6 + ser


def goal_us(delay_us: float) -> float:
    """Issue 17's goal for the residual: 0.1 ms + 0.5 % of the delay."""
    return 100.0 + 0.005 * delay_us


@dataclass(frozen=True)
class Measurement:
    median_us: float  # median of the batch means: the typical RTT
    min_us: float  # the fastest ping: the link's fixed latency on top of the delay
    spread_us: float  # max - min of the batch means: how noisy the host was meanwhile
    batches: int


def measurement(batches: list[dict[str, float]]) -> Measurement | None:
    """From ping summaries (`ping.summaries`: rtt_avg_us, rtt_min_us per batch)."""
    if not batches:
        return None
    means = [b["rtt_avg_us"] for b in batches]
    return Measurement(
        round(statistics.median(means), 1),
        round(min(b["rtt_min_us"] for b in batches), 1),
        round(max(means) - min(means), 1),
        len(batches),
    )


def next_correction(
    correction_us: float, measured_us: float, expected_us: float, delay_us: float
) -> float:
    """The correction that would have made `measured` (the fastest ping) hit `expected`: the
    current one plus the error seen with it, never below 0 (a link is never slowed down beyond
    its configuration), never more than the delay itself or MAX_CORRECTION_US."""
    want = correction_us + (measured_us - expected_us)
    return round(min(max(want, 0.0), delay_us, MAX_CORRECTION_US), 1)


def summary(
    overhead: Measurement,
    residual: Measurement,
    expected_us: float,
    correction_us: float,
    delay_us: float,
    rounds: int,
) -> dict[str, Any]:
    """The calibration record of one link (state file, `lab status`, `lab.metadata()`)."""
    res = round(residual.median_us - expected_us, 1)
    goal = round(goal_us(delay_us), 1)
    return {
        "overhead_us": round(overhead.median_us - expected_us, 1),  # uncorrected median error
        "overhead_min_us": round(overhead.min_us - expected_us, 1),
        "correction_us": correction_us,
        "residual_us": res,
        "residual_min_us": round(residual.min_us - expected_us, 1),  # ~0: the delay is a floor
        "goal_us": goal,
        "ok": abs(res) <= goal,
        "spread_us": residual.spread_us,
        "rounds": rounds,
        "time": round(time.time(), 3),
    }


def calibratable(link: dict[str, Any]) -> bool:
    """Emulated links always (the forwarder adds latency even at delay 0, reported as the
    residual); a veth link only with a delay (netem): a bare veth has nothing to subtract."""
    return link.get("kind") != "veth" or float(link["shape"]["delay_us"]) > 0


# -- IO: pinging across links ---------------------------------------------------------------
def _ping_loop(link: dict[str, Any], expected_us: float) -> list[str]:
    """argv: one warm-up batch (not counted: the forwarder learns its wake-up lead) and
    BATCHES batches of COUNT pings, from end a's namespace to end b's link address."""
    wait = max(0.5, 3 * expected_us / 1e6)  # how long ping waits for a lost reply
    one = f"ping -n -q -c {COUNT} -i {INTERVAL_S} -W {wait:.2f} {link['addr_b']}"
    loop = f"ping -n -q -c 3 -i {INTERVAL_S} -W {wait:.2f} {link['addr_b']}; " + "; ".join(
        [one] * BATCHES
    )
    return ["ip", "netns", "exec", link["ns_a"], "sh", "-c", loop]


def measure_links(links: list[dict[str, Any]]) -> list[Measurement | None]:
    """One measurement per link (None: no reply at all), PARALLEL links at a time."""
    out: list[Measurement | None] = []
    for start in range(0, len(links), PARALLEL):
        chunk = links[start : start + PARALLEL]
        procs = [
            subprocess.Popen(
                _ping_loop(ln, expected_rtt_us(live.shape_of(ln["shape"]))),
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            for ln in chunk
        ]
        for p in procs:
            text, _ = p.communicate(timeout=120)
            out.append(measurement(summaries(text)[1:]))  # the warm-up batch is not counted
    return out


def run(
    name: str, root: Path | None = None, indices: list[int] | None = None
) -> dict[int, dict[str, Any]]:
    """Calibrate links `indices` (default: every calibratable link) of running lab `name`;
    returns {link index: calibration record}, also written to the lab's state file."""
    rec = state.read(name, root) or {}
    links = rec.get("links", [])
    todo = [
        i for i in (indices if indices is not None else range(len(links))) if calibratable(links[i])
    ]
    if not todo:
        return {}
    expected = {i: expected_rtt_us(live.shape_of(links[i]["shape"])) for i in todo}
    delay = {i: float(links[i]["shape"]["delay_us"]) for i in todo}
    # the first measurement is made without any correction: it is the link's own overhead
    for i in todo:
        if links[i].get("correction_us"):
            live.set_correction(name, i, 0.0, root)
    first = dict(zip(todo, measure_links([links[i] for i in todo]), strict=True))
    corr = {i: 0.0 for i in todo}
    last = dict(first)
    rounds = dict.fromkeys(todo, 1)
    pending = [i for i in todo if first[i] is not None]
    for _ in range(2):  # correct, verify; once more where the fastest ping misses the floor
        if not pending:
            break
        for i in pending:
            m = last[i]
            assert m is not None
            corr[i] = next_correction(corr[i], m.min_us, expected[i], delay[i])
            live.set_correction(name, i, corr[i], root)
        again = dict(zip(pending, measure_links([links[i] for i in pending]), strict=True))
        for i in pending:
            last[i] = again[i] or last[i]
            rounds[i] += 1
        pending = [
            i
            for i in pending
            if again[i] is not None
            and abs(again[i].min_us - expected[i]) > MIN_STEP_US  # type: ignore[union-attr]
            and not math.isclose(corr[i], min(delay[i], MAX_CORRECTION_US))
        ]
    out: dict[int, dict[str, Any]] = {}
    for i in todo:
        f, m = first[i], last[i]
        if f is None or m is None:
            out[i] = {"error": "no ping reply across the link", "time": round(time.time(), 3)}
        else:
            out[i] = summary(f, m, expected[i], corr[i], delay[i], rounds[i])
    live.save_calibrations(name, out, root)
    return out
