"""`netdiag bench cc`: the BBR paper's loss table on a lab link, cubic vs bbr side by side.

Cardwell et al., "BBR: Congestion-Based Congestion Control" (ACM Queue 2016), figure 8: on a
100 Mbit/s, 100 ms path, CUBIC's throughput falls ~10x at 0.1 % random loss and stalls above
1 %, while BBR stays near the ideal rate x (1 - loss) up to ~5 % and close to it to ~15 %.

One two-node lab (emulated link: rate, RTT, random loss; no netem needed); per loss value the
link's loss is set live and iperf3 (the outside measurer) runs once per algorithm with
`-C cubic` / `-C bbr`. The "tuned" column runs iperf3 with no -C at all, on a client whose
namespace default is cubic, after `netdiag tune --cc bbr --port P --cgroup …` (the sockops
policy, through tune's own plan/journal/revert): it shows a tuned host gets the bbr row for
the P2P port without the application choosing anything.
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.table import Table

from netdiag.bench import output
from netdiag.kernel import cgroup
from netdiag.lab import Lab, two_node
from netdiag.lab.iperf import iperf3 as lab_iperf3
from netdiag.report.results import ResultBuilder
from netdiag.tune import apply as tune_apply
from netdiag.tune import plan as tune_plan
from netdiag.tune.env import TuneEnv

PAPER_LOSSES = (0.0, 0.0001, 0.001, 0.01, 0.02, 0.05, 0.10)
QUICK_LOSSES = (0.01,)
PAYLOAD_SHARE = 1448 / 1500  # TCP payload per 1500-byte packet (IP + TCP with timestamps)


def _join(cg: Path | None) -> Callable[[], None] | None:
    if cg is None:
        return None
    procs = str(cg / "cgroup.procs")

    def join() -> None:  # runs in the child before exec: the iperf3 client joins the cgroup
        with open(procs, "w") as f:
            f.write("0")

    return join


def iperf3(lab: Lab, port: int, seconds: float, cc: str | None, cg: Path | None) -> dict[str, Any]:
    """One iperf3 run a -> b; `cc` None leaves the choice to the kernel (default or sockops)."""
    args = ["-O", "2", *(["-C", cc] if cc else [])]
    return lab_iperf3(lab, "a", "b", args, seconds, port, preexec=_join(cg))


def _row(data: dict[str, Any]) -> dict[str, Any]:
    end = data["end"]
    return {
        "goodput_bps": round(float(end["sum_received"]["bits_per_second"])),
        "retransmits": end["sum_sent"].get("retransmits"),
        "cc_used": end.get("sender_tcp_congestion"),
        "mean_rtt_us": _mean_rtt(end),
    }


def _link_counters(lab: Lab) -> dict[str, dict[str, int]]:
    """The emulated link's counters per direction (ab: data, ba: ACKs); the forwarder
    writes them each second, so wait for a fresh copy."""
    time.sleep(1.1)
    st: dict[str, dict[str, int]] = lab.link_stats("a", "b") or {}
    return st


def _link_delta(
    before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]
) -> dict[str, Any]:
    """What the link did during one run: the loss it really applied to the data (and to the
    ACKs — the lab's loss is symmetric), and data drops that were not the configured random
    loss (bottleneck queue overflow, forwarder lag)."""
    ab0, ab1 = before.get("ab", {}), after.get("ab", {})
    d: dict[str, Any] = {
        k: ab1.get(k, 0) - ab0.get(k, 0)
        for k in ("rx_pkts", "drop_loss", "drop_queue", "drop_overflow")
    }
    d["observed_loss"] = round(d["drop_loss"] / d["rx_pkts"], 5) if d["rx_pkts"] > 0 else None
    ba0, ba1 = before.get("ba", {}), after.get("ba", {})
    acks = ba1.get("rx_pkts", 0) - ba0.get("rx_pkts", 0)
    ack_lost = ba1.get("drop_loss", 0) - ba0.get("drop_loss", 0)
    d["ack_observed_loss"] = round(ack_lost / acks, 5) if acks > 0 else None
    return d


def _mean_rtt(end: dict[str, Any]) -> int | None:
    streams = end.get("streams") or []
    rtts = [s["sender"].get("mean_rtt") for s in streams if s.get("sender")]
    return int(rtts[0]) if rtts and rtts[0] is not None else None


@contextlib.contextmanager
def tuned_client(lab: Lab, port: int, env: TuneEnv) -> Iterator[Path]:
    """Client namespace defaults to cubic; a sockops policy gives port `port` bbr — both
    applied through tune's plan/journal, reverted on exit (and by `tune --revert` after a
    kill -9: the entries are in the normal journal)."""
    # a fixed name: a run killed with -9 leaves at most this one empty directory, reused next
    cg = cgroup.v2_root() / "nd-tune-bench"
    cg.mkdir(exist_ok=True)
    entries = []
    try:
        argv = ["netdiag", "bench", "cc"]
        for req in (
            # allow_host: the namespace may need cubic on the host's allowed list (journaled)
            tune_plan.Request(cc="cubic", netns=lab.ns("a"), allow_host=True),
            tune_plan.Request(cc="bbr", cgroup=str(cg), ports=[port]),
        ):
            p = tune_plan.build(req, env)
            if p.changes:
                entries.append(tune_apply.apply(p, env, argv).id)
        yield cg
    finally:
        for eid in reversed(entries):
            tune_apply.revert(env, eid)
        with contextlib.suppress(OSError):
            cg.rmdir()


def run(
    losses: tuple[float, ...] = PAPER_LOSSES,
    *,
    rate_bps: int = 100_000_000,
    rtt_s: float = 0.1,
    seconds: float = 15.0,
    engine: str = "auto",
    port: int = 5391,
    tuned: bool = True,
    env: TuneEnv | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    # lab "tune": its namespaces are nd-tune-a and nd-tune-b (this engineer's tag)
    topo = two_node(rtt_s, rate_bps, 0.0, queue="1bdp", engine=engine, name="tune")
    rows: list[dict[str, Any]] = []
    with Lab.up(topo) as lab, contextlib.ExitStack() as stack:
        meta = lab.metadata()
        cg = (
            stack.enter_context(tuned_client(lab, port, env or TuneEnv.from_environ()))
            if tuned
            else None
        )
        for i, loss in enumerate(losses):
            lab.set_link("a", "b", loss=loss)
            row: dict[str, Any] = {"loss": loss, "ideal_bps": round(rate_bps * (1 - loss))}
            for cc in ("cubic", "bbr") + (("tuned",) if tuned else ()):
                if progress:
                    progress(f"[{i + 1}/{len(losses)}] loss {loss * 100:g}% {cc}")
                s0 = _link_counters(lab)
                data = iperf3(
                    lab, port, seconds, None if cc == "tuned" else cc, cg if cc == "tuned" else None
                )
                r = _row(data)
                r["link"] = _link_delta(s0, _link_counters(lab))
                r["ratio_to_ideal"] = round(r["goodput_bps"] / row["ideal_bps"], 4)
                row[cc] = r
            row["bbr_over_cubic"] = round(
                row["bbr"]["goodput_bps"] / max(1, row["cubic"]["goodput_bps"]), 2
            )
            rows.append(row)
    return {
        "benchmark": "cc",
        "time": time.time(),
        "host": {"kernel": platform.release(), "cpus": os.cpu_count()},
        "link": {"rate_bps": rate_bps, "rtt_us": int(rtt_s * 1e6), "queue": "1bdp"},
        "lab": meta,
        "seconds": seconds,
        "measurer": "iperf3 -J (first 2 s omitted)",
        "ideal": "rate_bps x (1 - loss); TCP payload can reach at most 1448/1500 of it",
        "rows": rows,
    }


def table(result: dict[str, Any]) -> Table:
    link = result["link"]
    t = Table(
        title=f"cc vs random loss — {link['rate_bps'] / 1e6:g} Mbit/s, "
        f"{link['rtt_us'] / 1e3:g} ms RTT, {result['seconds']:g} s per run",
        show_edge=False,
    )
    cols = ["loss", "ideal Mb/s", "cubic Mb/s", "÷ideal", "bbr Mb/s", "÷ideal", "bbr/cubic"]
    tuned = bool(result["rows"]) and "tuned" in result["rows"][0]
    cols += ["link loss obs"]
    if tuned:
        cols += ["tuned port Mb/s", "cc used"]
    for c in cols:
        t.add_column(c, justify="right")
    for r in result["rows"]:
        cells = [
            f"{r['loss'] * 100:g}%",
            _mbit(r["ideal_bps"]),
            _mbit(r["cubic"]["goodput_bps"]),
            f"{r['cubic']['ratio_to_ideal']:.2f}",
            _mbit(r["bbr"]["goodput_bps"]),
            f"{r['bbr']['ratio_to_ideal']:.2f}",
            f"{r['bbr_over_cubic']:.1f}×",
        ]
        cells.append(_obs(r["bbr"].get("link", {})))
        if tuned:
            cells += [_mbit(r["tuned"]["goodput_bps"]), str(r["tuned"]["cc_used"])]
        t.add_row(*cells)
    return t


def _obs(link: dict[str, Any]) -> str:
    """Loss the link applied to the bbr run's data (other drops, if any, after a +)."""
    if not link or link.get("observed_loss") is None:
        return "—"
    extra = link["drop_queue"] + link["drop_overflow"]
    return f"{link['observed_loss'] * 100:.2f}%" + (f" +{extra}q" if extra else "")


def _mbit(bps: float) -> str:
    return f"{bps / 1e6:.1f}"


def to_result(doc: dict[str, Any], parameters: dict[str, Any] | None = None) -> ResultBuilder:
    """summary.cc: one row per (loss, algorithm) — `case` "loss 1%", `cc` cubic|bbr|tuned;
    summary.bbr_over_cubic: the side-by-side ratio per loss. Also converts the JSON of older
    netdiag versions (the same figures, nested)."""
    link = doc["link"]
    params = parameters or {
        "losses": [r["loss"] for r in doc["rows"]],
        "rate_bps": link["rate_bps"],
        "rtt_us": link["rtt_us"],
        "seconds": doc["seconds"],
        "tuned": bool(doc["rows"]) and "tuned" in doc["rows"][0],
    }
    lab = doc.get("lab") or {}
    res = output.new(
        "cc",
        params,
        link_engine=lab.get("engine"),
        variants=[c for c in ("cubic", "bbr", "tuned") if doc["rows"] and c in doc["rows"][0]],
        link=link,
        measurer=doc.get("measurer"),
        ideal=doc.get("ideal"),
        lab=lab,
    )
    for r in doc["rows"]:
        case = f"loss {r['loss'] * 100:g}%"
        for cc in ("cubic", "bbr", "tuned"):
            if cc not in r:
                continue
            got = r[cc]
            seen = got.get("link") or {}
            res.add_summary(
                "cc",
                {
                    "case": case,
                    "variant": cc,
                    "loss": r["loss"],
                    "ideal_bps": r["ideal_bps"],
                    "goodput_bps": got["goodput_bps"],
                    "ratio_to_ideal": got["ratio_to_ideal"],
                    "retransmits": got.get("retransmits"),
                    "cc_used": got.get("cc_used"),
                    "mean_rtt_us": got.get("mean_rtt_us"),
                    "link_observed_loss": seen.get("observed_loss"),
                },
            )
            if seen:
                res.record("link", {"case": case, "variant": cc, **output.flat(seen)})
        res.add_summary(
            "bbr_over_cubic", {"case": case, "loss": r["loss"], "ratio": r["bbr_over_cubic"]}
        )
    return res
