"""`netdiag bench emulator`: how faithfully lab links do what they are configured to do.

Per grid point one two-node lab; outside tools measure it:
- RTT: `ping` (idle link) against the configured delay; target |err| <= 0.2 ms + 1 %;
- rate: `iperf3` TCP (bbr, first 2 s omitted) goodput against the configured rate times the
  payload share of a full packet (1448/1500 with timestamps); target |err| <= 3 %;
- loss: `iperf3 -u` one-way datagram loss against the configured loss; target: the configured
  value lies in the Wilson 95 % interval of the observed k/n;
- CPU: the link forwarder's CPU time during the TCP run, % of one core (userspace engine).
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.table import Table

from netdiag.bench import output
from netdiag.errors import NetdiagError
from netdiag.lab import ping
from netdiag.lab.iperf import iperf3
from netdiag.lab.lab import Lab
from netdiag.lab.ping import ping_rtt
from netdiag.lab.topology import (
    LinkShape,
    LinkSpec,
    NodeSpec,
    Topology,
    default_address,
    two_node,
    validate,
)
from netdiag.report.results import ResultBuilder

PAYLOAD_SHARE = 1448 / 1500  # TCP payload per 1500-byte IP packet (20 IP + 32 TCP w/ timestamps)
BUFFERS = (
    "4096 131072 134217728"  # tcp_rmem/tcp_wmem in the lab namespaces: room for 500 Mbit x 100 ms
)


@dataclass(frozen=True)
class Point:
    rate_bps: int
    delay_s: float
    loss: float


FULL_GRID = tuple(
    Point(r, d, lo)
    for r in (10_000_000, 100_000_000, 500_000_000)
    for d in (0.01, 0.05, 0.1)
    for lo in (0.0, 0.01)
)
QUICK_GRID = (Point(100_000_000, 0.02, 0.01),)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a binomial proportion k/n."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def rtt_target_s(delay_s: float) -> float:
    return 0.0002 + 0.01 * delay_s


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    fields = s[s.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def timed_counters(lab: Lab, node: str, dev: str) -> tuple[float, dict[str, int]]:
    """Counters with the midpoint of the time it took to read them (a subprocess: ms)."""
    t0 = time.monotonic()
    c = if_counters(lab, node, dev)
    return (t0 + time.monotonic()) / 2, c


def if_counters(lab: Lab, node: str, dev: str) -> dict[str, int]:
    """Kernel counters of an interface in a node's namespace: an outside view of the link."""
    r = subprocess.run(
        ["ip", "-j", "-s", "-n", lab.ns(node), "link", "show", "dev", dev],
        capture_output=True,
        text=True,
        check=True,
    )
    st = json.loads(r.stdout)[0]["stats64"]
    return {
        "rx_bytes": int(st["rx"]["bytes"]),
        "rx_packets": int(st["rx"]["packets"]),
        "tx_bytes": int(st["tx"]["bytes"]),
        "tx_packets": int(st["tx"]["packets"]),
    }


def steady_rate_bps(result: dict[str, Any]) -> float:
    """Receiver-side rate over whole intervals after the first (iperf3 --get-server-output)."""
    ivs = [i["sum"] for i in result.get("server_output_json", {}).get("intervals", [])]
    whole = [i for i in ivs[1:] if i["seconds"] >= 0.99]
    if not whole:
        raise NetdiagError("iperf3 server reported no whole intervals", "run for 3 s or more")
    return sum(float(i["bytes"]) * 8 for i in whole) / sum(float(i["seconds"]) for i in whole)


PING_BYTES = 84  # IP packet of a default ping (56 data + 8 ICMP + 20 IP)
LOSS_SAMPLES = 5000  # datagrams per loss measurement: 95 % CI about ±0.3 % at 1 %
UDP_LEN = 1400  # datagram payload; the IP packet is 28 bytes more


def measure_point(
    pt: Point, engine: str, seconds: float, port: int, seed: int = 1
) -> dict[str, Any]:
    topo = two_node(pt.delay_s, pt.rate_bps, 0.0, queue="1bdp", engine=engine, seed=seed)
    with Lab.up(topo) as lab:
        for n in ("a", "b"):
            lab.sysctl(n, "net.ipv4.tcp_rmem", BUFFERS)
            lab.sysctl(n, "net.ipv4.tcp_wmem", BUFFERS)
        meta = lab.metadata()
        # RTT on the idle link; judged on the median, which a single scheduling hiccup of this
        # shared host cannot move (the mean and p90 are reported next to it)
        rtt = ping_rtt(lab, "a", "b")
        # a real link of this rate also serializes the 84-byte probe each way
        expect_rtt_us = pt.delay_s * 1e6 + (
            2 * PING_BYTES * 8 / pt.rate_bps * 1e6 if pt.rate_bps else 0
        )
        rtt_err_us = rtt["rtt_median_us"] - expect_rtt_us
        pids = lab.forwarder_pids()
        # rate: UDP offered at 1.1 x the rate. The link's output is read from the kernel's
        # counters of the receiving interface (IP bytes, what the link serialized) over the
        # steady part of the run: neither the emulator's own account nor the receiving app's
        # (which loses datagrams to socket overruns when this shared host is busy).
        udp_secs = max(seconds, 3.0)
        marks: list[tuple[float, dict[str, int]]] = []

        idles: list[int] = []

        def sample() -> None:
            time.sleep(1.0)  # past the first one-way delay and the queue filling
            marks.append(timed_counters(lab, "b", dev_b))
            idles.append(int(lab.link_stats("a", "b").get("ab", {}).get("idle_ns", 0)))
            time.sleep(udp_secs - 1.5)
            marks.append(timed_counters(lab, "b", dev_b))
            idles.append(int(lab.link_stats("a", "b").get("ab", {}).get("idle_ns", 0)))

        dev_b = lab.link_devices("a", "b")[1]
        # a deep queue for this phase (>= 100 ms of data): a sender that stalls for a moment
        # on this shared host must not leave the link idle
        lab.set_link("a", "b", queue_pkts=max(1000, math.ceil(pt.rate_bps * 0.1 / 8 / 1500)))
        udp = iperf3(
            lab,
            "a",
            "b",
            ["-u", "-b", str(int(pt.rate_bps * 1.1)), "-l", str(UDP_LEN), "--get-server-output"],
            udp_secs,
            port,
            during=sample,
        )
        (t_a, c_a), (t_b, c_b) = marks
        link_bps = (c_b["rx_bytes"] - c_a["rx_bytes"]) * 8 / (t_b - t_a)
        app_bps = steady_rate_bps(udp)
        # the link is only measured if it was the bottleneck, i.e. its serializer was busy
        # (>= 98 % of the window, by its idle-time counter). Else the sender (iperf3 on this
        # shared 2-core host) stalled or was slower than the link.
        busy = 1 - (idles[1] - idles[0]) / 1e9 / (t_b - t_a) if len(idles) == 2 else 0.0
        saturated = busy >= 0.98
        lab.set_link("a", "b", queue_pkts=topo.links[0].shape.queue_packets(topo.mtu))
        offered_bps = float(udp["end"]["sum"]["bits_per_second"])
        # TCP goodput (bbr, first 2 s omitted) and the forwarder's CPU meanwhile
        t0, c0 = time.monotonic(), sum(_cpu_ticks(p) for p in pids)
        tcp = iperf3(lab, "a", "b", ["-C", "bbr", "-O", "2"], seconds, port + 1)
        t1, c1 = time.monotonic(), sum(_cpu_ticks(p) for p in pids)
        cpu_pct = (c1 - c0) / os.sysconf("SC_CLK_TCK") / (t1 - t0) * 100 if pids else None
        goodput = float(tcp["end"]["sum_received"]["bits_per_second"])
        expect = pt.rate_bps * PAYLOAD_SHARE
        res: dict[str, Any] = {
            "rate_bps": pt.rate_bps,
            "delay_us": pt.delay_s * 1e6,
            "loss": pt.loss,
            **rtt,
            "rtt_expected_us": round(expect_rtt_us, 1),
            "rtt_err_us": round(rtt_err_us, 1),
            "rtt_ratio": rtt["rtt_median_us"] / expect_rtt_us if expect_rtt_us else None,
            "rtt_ok": abs(rtt_err_us) <= rtt_target_s(pt.delay_s) * 1e6,
            "link_bps": round(link_bps),
            "rate_ratio": link_bps / pt.rate_bps,
            "rate_ok": abs(link_bps / pt.rate_bps - 1) <= 0.03 if saturated else None,
            "udp_app_bps": round(app_bps),
            "udp_app_ratio": app_bps / (pt.rate_bps * UDP_LEN / (UDP_LEN + 28)),
            "udp_offered_bps": round(offered_bps),
            "link_busy": round(busy, 4),
            # the rate while the serializer had something to send (its own idle account)
            "rate_ratio_busy": link_bps / pt.rate_bps / busy if busy > 0 else None,
            "udp_sender_limited": not saturated,
            "goodput_bps": round(goodput),
            "goodput_ratio": goodput / expect,
            "goodput_ok": abs(goodput / expect - 1) <= 0.03,
            "tcp_retransmits": tcp["end"]["sum_sent"].get("retransmits"),
            "emulator_cpu_pct": round(cpu_pct, 1) if cpu_pct is not None else None,
            "engine": meta["engine"],
            "seed": seed,
        }
        if pt.loss:
            # loss: datagrams the sender's interface handed to the link vs what the receiver's
            # interface got (kernel counters on both ends, so receiver overruns do not count)
            # random loss only: a light load and a deep queue, so no datagram meets a full queue
            lab.set_link("a", "b", loss=pt.loss, queue_pkts=10_000)
            udp_bps = min(pt.rate_bps // 4, 20_000_000)
            dlen = 200 if udp_bps <= 5_000_000 else 1000
            udp_secs = min(8.0, max(2.0, LOSS_SAMPLES / (udp_bps / 8 / dlen)))
            dev_a = lab.link_devices("a", "b")[0]
            before = lab.link_stats("a", "b").get("ab", {})
            tx0, rx0 = if_counters(lab, "a", dev_a), if_counters(lab, "b", dev_b)
            udp = iperf3(
                lab,
                "a",
                "b",
                ["-u", "-b", str(udp_bps), "-l", str(dlen)],
                udp_secs,
                port + 2,
            )
            time.sleep(pt.delay_s + 0.05)  # the last datagrams are still on the wire
            tx1, rx1 = if_counters(lab, "a", dev_a), if_counters(lab, "b", dev_b)
            after = lab.link_stats("a", "b").get("ab", {})
            sent = tx1["tx_packets"] - tx0["tx_packets"]
            lost = sent - (rx1["rx_packets"] - rx0["rx_packets"])
            lo, hi = wilson(lost, sent)
            usum = udp["end"]["sum"]
            emulated = after.get("drop_loss", 0) - before.get("drop_loss", 0)
            seen = after.get("rx_pkts", 0) - before.get("rx_pkts", 0)
            res.update(
                loss_observed=lost / sent if sent else None,
                loss_packets=sent,
                loss_ci95=[round(lo, 5), round(hi, 5)],
                loss_ratio=(lost / sent) / pt.loss if sent else None,
                loss_ok=lo <= pt.loss <= hi,
                # the receiving app's view (adds socket overruns) and the emulator's own count
                loss_app=int(usum["lost_packets"]) / int(usum["packets"])
                if usum["packets"]
                else None,
                loss_emulated=emulated / seen if seen else None,
            )
        return res


def run(
    grid: tuple[Point, ...],
    *,
    engine: str = "auto",
    seconds: float = 5.0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    points = []
    # a point with and without loss share rate and delay: RTT/rate once, loss once per lab
    seen: dict[tuple[int, float], Point] = {}
    for p in grid:
        key = (p.rate_bps, p.delay_s)
        if key not in seen or p.loss > seen[key].loss:
            seen[key] = p
    for i, p in enumerate(seen.values()):
        if progress:
            progress(
                f"[{i + 1}/{len(seen)}] {p.rate_bps / 1e6:g} Mbit/s, {p.delay_s * 1e3:g} ms, "
                f"loss {p.loss * 100:g}%"
            )
        points.append(measure_point(p, engine, seconds, 5301 + 3 * i, seed=i + 1))
    return {
        "benchmark": "emulator",
        "time": time.time(),
        "host": {"kernel": platform.release(), "cpus": os.cpu_count()},
        "engine": points[0]["engine"] if points else engine,
        "seconds": seconds,
        "targets": {
            "rtt": "|err| <= 0.2 ms + 1 %",
            "rate": "|err| <= 3 %",
            "loss": "in Wilson 95 % CI",
        },
        "points": points,
    }


def star(n_spokes: int, delay_s: float, rate_bps: int, engine: str, name: str) -> Topology:
    """A hub and N spokes, each spoke on its own link (built as data, validated)."""
    shape = LinkShape(delay_s, 0.0, rate_bps, 0.0, 0, 1.0)
    names = ["hub", *(f"s{i}" for i in range(1, n_spokes + 1))]
    topo = Topology(
        name=name,
        nodes=tuple(NodeSpec(n, (default_address(i),)) for i, n in enumerate(names)),
        links=tuple(LinkSpec("hub", s, shape) for s in names[1:]),
        engine=engine,
    )
    validate(topo)
    return topo


def measure_scale(
    n_spokes: int, engine: str, seconds: float, delay_s: float = 0.02, rate_bps: int = 10_000_000
) -> dict[str, Any]:
    """A hub and N spokes; half the spokes push TCP (bbr) to the hub while the other half
    ping it, all at once: does every link still meet the targets with N links busy?"""
    import secrets

    topo = star(n_spokes, delay_s, rate_bps, engine, f"s{secrets.token_hex(3)}")
    t0 = time.monotonic()
    with Lab.up(topo) as lab:
        up_s = time.monotonic() - t0
        loaded = [f"s{i}" for i in range(1, n_spokes + 1, 2)]
        pinging = [f"s{i}" for i in range(2, n_spokes + 1, 2)]
        pids = lab.forwarder_pids()
        servers = [
            lab.popen(
                "hub",
                ["iperf3", "-s", "-1", "-p", str(6000 + k), "-B", lab.addr("hub")],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for k in range(len(loaded))
        ]
        time.sleep(0.5)
        c0, w0 = sum(_cpu_ticks(p) for p in pids), time.monotonic()
        clients = [
            lab.popen(
                s,
                [
                    "iperf3",
                    "-c",
                    lab.addr("hub"),
                    "-p",
                    str(6000 + k),
                    "-J",
                    "-C",
                    "bbr",
                    "-O",
                    "2",
                    "-t",
                    f"{seconds:g}",
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            for k, s in enumerate(loaded)
        ]
        time.sleep(2.0)  # pings run while the TCP flows are past start-up
        expect_us = delay_s * 1e6 + 2 * PING_BYTES * 8 / rate_bps * 1e6  # + probe serialization
        # 6 batches of 8 pings per spoke, all spokes at once; median of batch means (see ping_rtt)
        loop = f"for i in 1 2 3 4 5 6; do ping -n -q -c 8 -i 0.02 {lab.addr('hub')}; done"
        pings = [
            lab.popen(s, ["sh", "-c", loop], stdout=subprocess.PIPE, text=True) for s in pinging
        ]
        rtt_errs = []
        for p in pings:
            out, _ = p.communicate(timeout=60)
            means = [s["rtt_avg_us"] for s in ping.summaries(out)]
            rtt_errs.append(statistics.median(means) - expect_us if means else float("inf"))
        ratios = []
        for c in clients:
            out, _ = c.communicate(timeout=seconds + 60)
            try:
                bps = float(json.loads(out)["end"]["sum_received"]["bits_per_second"])
            except (ValueError, KeyError):
                bps = 0.0
            ratios.append(bps / (rate_bps * PAYLOAD_SHARE))
        cpu = (sum(_cpu_ticks(p) for p in pids) - c0) / os.sysconf("SC_CLK_TCK")
        cpu_pct = cpu / (time.monotonic() - w0) * 100
        for srv in servers:
            try:
                srv.wait(timeout=5)
            except subprocess.TimeoutExpired:
                srv.kill()
        worst_rtt = max(rtt_errs) if rtt_errs else 0.0
        return {
            "namespaces": n_spokes + 1,
            "links": n_spokes,
            "up_s": round(up_s, 2),
            "delay_us": delay_s * 1e6,
            "rate_bps": rate_bps,
            "loaded_links": len(loaded),
            "rtt_err_us_worst": round(worst_rtt, 1),
            "rtt_err_us_median": round(statistics.median(rtt_errs), 1) if rtt_errs else None,
            "rtt_ok": worst_rtt <= rtt_target_s(delay_s) * 1e6,
            "goodput_ratio_min": round(min(ratios), 4) if ratios else None,
            "goodput_ratio_mean": round(statistics.fmean(ratios), 4) if ratios else None,
            "rate_ok": bool(ratios) and all(abs(r - 1) <= 0.03 for r in ratios),
            "emulator_cpu_pct": round(cpu_pct, 1),
            "engine": lab.metadata()["engine"],
        }


def _app_lost_more(p: dict[str, Any]) -> bool:
    return bool(p.get("loss_app") is not None and p["loss_app"] > p["loss_observed"] + 0.005)


def table(result: dict[str, Any]) -> Table:
    t = Table(title=f"emulator fidelity — engine {result['engine']}", show_edge=False)
    for c in (
        "rate",
        "delay",
        "RTT p50",
        "err",
        "",
        "link/rate",
        "",
        "TCP/rate",
        "loss [95% CI]",
        "",
        "CPU%",
    ):
        t.add_column(c, justify="right", no_wrap=True)

    def ok(v: bool | None) -> str:
        return "—" if v is None else ("✓" if v else "✗")

    for p in result["points"]:
        loss = (
            f"{p['loss_observed'] * 100:.2f}% "
            f"[{p['loss_ci95'][0] * 100:.2f},{p['loss_ci95'][1] * 100:.2f}]"
            if "loss_observed" in p
            else "—"
        )
        t.add_row(
            f"{p['rate_bps'] / 1e6:g}M",
            f"{p['delay_us'] / 1e3:g}ms",
            f"{p['rtt_median_us'] / 1e3:.3f}",
            f"{p['rtt_err_us'] / 1e3:+.3f}",
            ok(p["rtt_ok"]),
            f"{p['rate_ratio']:.3f}" + ("†" if p.get("udp_sender_limited") else ""),
            ok(p["rate_ok"]),
            f"{p['goodput_ratio']:.3f}",
            loss,
            ok(p.get("loss_ok")) + ("‡" if _app_lost_more(p) else ""),
            f"{p['emulator_cpu_pct']}" if p["emulator_cpu_pct"] is not None else "—",
        )
    notes = []
    if any(p.get("udp_sender_limited") for p in result["points"]):
        notes.append(
            "† sender-limited: the link sat idle > 2 % of the window (iperf3 stalled or "
            "was slower than the rate) — not judged; see link_busy, rate_ratio_busy"
        )
    if any(_app_lost_more(p) for p in result["points"]):
        notes.append(
            "‡ the receiving iperf3 lost more (socket overruns on this busy host): "
            "loss_app in the JSON"
        )
    t.caption = "\n".join(notes) or None
    return t


def scale_table(rows: list[dict[str, Any]]) -> Table:
    t = Table(title="lab scale: half the links loaded (TCP), half pinged", show_edge=False)
    for c in ("namespaces", "up s", "RTT err worst", "", "TCP/rate min", "mean", "", "CPU%"):
        t.add_column(c, justify="right", no_wrap=True)
    for r in rows:
        t.add_row(
            str(r["namespaces"]),
            f"{r['up_s']:.1f}",
            f"{r['rtt_err_us_worst'] / 1e3:+.3f}ms",
            "✓" if r["rtt_ok"] else "✗",
            f"{r['goodput_ratio_min']:.3f}",
            f"{r['goodput_ratio_mean']:.3f}",
            "✓" if r["rate_ok"] else "✗",
            f"{r['emulator_cpu_pct']}",
        )
    return t


def to_result(doc: dict[str, Any], parameters: dict[str, Any] | None = None) -> ResultBuilder:
    """summary.points: one row per grid point (key `point`, e.g. "100mbit 20ms 1%"), or
    summary.scale: one row per star size; the targets in metadata. Also converts the JSON of
    older netdiag versions."""
    scale = doc.get("benchmark") == "emulator-scale"
    params = parameters or {"seconds": doc.get("seconds"), "scale": scale}
    res = output.new(
        "emulator",
        params,
        link_engine=doc.get("engine"),
        targets=doc.get("targets"),
    )
    if scale:
        for r in doc["rows"]:
            res.add_summary("scale", {"case": f"{r['namespaces']} namespaces", **output.flat(r)})
        return res
    for p in doc["points"]:
        name = f"{p['rate_bps'] / 1e6:g}mbit {p['delay_us'] / 1e3:g}ms" + (
            f" {p['loss'] * 100:g}%" if p.get("loss") else ""
        )
        row = output.flat(p)
        lo_hi = p.get("loss_ci95")
        if isinstance(lo_hi, list) and len(lo_hi) == 2:
            row.pop("loss_ci95", None)
            row["loss_ci95_lo"], row["loss_ci95_hi"] = lo_hi
        res.add_summary("points", {"point": name, **row})
    return res
