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
import re
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from rich.table import Table

from netdiag.errors import NetdiagError
from netdiag.kernel import netns
from netdiag.lab.lab import Lab
from netdiag.lab.topology import two_node

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


def parse_ping(out: str) -> dict[str, float]:
    m = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms", out)
    if not m:
        raise NetdiagError(f"ping printed no RTT summary:\n{out[-300:]}", "is the lab link up?")
    mn, avg, mx, mdev = (float(x) for x in m.groups())
    return {
        "rtt_min_us": mn * 1e3,
        "rtt_avg_us": avg * 1e3,
        "rtt_max_us": mx * 1e3,
        "rtt_mdev_us": mdev * 1e3,
    }


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    fields = s[s.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _set_buffers() -> None:
    for k in ("tcp_rmem", "tcp_wmem"):
        with open(f"/proc/sys/net/ipv4/{k}", "w") as f:
            f.write(BUFFERS)


def iperf3(
    lab: Lab, client: str, server: str, args: list[str], seconds: float, port: int
) -> dict[str, Any]:
    """Run an iperf3 client in `client` against a one-shot server in `server`; the JSON result."""
    srv = lab.popen(
        server,
        ["iperf3", "-s", "-1", "-J", "-p", str(port), "-B", lab.addr(server)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 5
        while True:  # wait until the server listens
            r = lab.exec(server, ["ss", "-Htln", f"sport = :{port}"])
            if r.stdout.strip() or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        r = lab.exec(
            client,
            ["iperf3", "-c", lab.addr(server), "-p", str(port), "-J", "-t", f"{seconds:g}", *args],
            timeout=seconds + 30,
        )
        try:
            data: dict[str, Any] = json.loads(r.stdout)
        except json.JSONDecodeError as e:
            raise NetdiagError(
                f"iperf3 printed no JSON: {r.stdout[-300:]} {r.stderr[-300:]}", "see above"
            ) from e
        if data.get("error"):
            raise NetdiagError(f"iperf3: {data['error']}", "is the lab up?")
        return data
    finally:
        try:
            srv.wait(timeout=5)
        except subprocess.TimeoutExpired:
            srv.kill()
            srv.wait()


def ping_rtts(lab: Lab, src: str, dst: str, count: int = 50, interval: float = 0.02) -> list[float]:
    """Per-reply RTTs in microseconds (lost probes are simply absent)."""
    r = lab.exec(
        src, ["ping", "-n", "-c", str(count), "-i", f"{interval:g}", lab.addr(dst)], timeout=60
    )
    rtts = [float(m) * 1e3 for m in re.findall(r"time=([\d.]+) ms", r.stdout)]
    if not rtts:
        raise NetdiagError(
            f"ping {src} -> {dst} got no replies:\n{r.stdout[-300:]}", "is the lab up?"
        )
    return rtts


def steady_rate_bps(result: dict[str, Any]) -> float:
    """Receiver-side rate over whole intervals after the first (iperf3 --get-server-output)."""
    ivs = [i["sum"] for i in result.get("server_output_json", {}).get("intervals", [])]
    whole = [i for i in ivs[1:] if i["seconds"] >= 0.99]
    if not whole:
        raise NetdiagError("iperf3 server reported no whole intervals", "run for 3 s or more")
    return sum(float(i["bytes"]) * 8 for i in whole) / sum(float(i["seconds"]) for i in whole)


def rtt_summary(rtts: list[float]) -> dict[str, float]:
    s = sorted(rtts)
    return {
        "rtt_avg_us": round(statistics.fmean(s), 1),
        "rtt_median_us": round(statistics.median(s), 1),
        "rtt_p90_us": round(s[min(len(s) - 1, int(0.9 * len(s)))], 1),
        "rtt_min_us": round(s[0], 1),
        "rtt_max_us": round(s[-1], 1),
    }


UDP_LEN = 1400  # datagram payload; the IP packet is 28 bytes more


def measure_point(
    pt: Point, engine: str, seconds: float, port: int, seed: int = 1
) -> dict[str, Any]:
    topo = two_node(pt.delay_s, pt.rate_bps, 0.0, queue="1bdp", engine=engine, seed=seed)
    with Lab.up(topo) as lab:
        for n in ("a", "b"):
            netns.run_in(lab.ns(n), partial(_set_buffers))
        meta = lab.metadata()
        # RTT on the idle link; judged on the median, which a single scheduling hiccup of this
        # shared host cannot move (the mean and p90 are reported next to it)
        rtt = rtt_summary(ping_rtts(lab, "a", "b"))
        rtt_err_us = rtt["rtt_median_us"] - pt.delay_s * 1e6
        pids = lab.forwarder_pids()
        # rate: UDP offered at 1.1 x the rate; what the receiver gets is what the link
        # serializes. Judged on the receiver's whole 1 s intervals after the first (which
        # includes the first one-way delay with nothing arriving yet).
        udp = iperf3(
            lab,
            "a",
            "b",
            ["-u", "-b", str(int(pt.rate_bps * 1.1)), "-l", str(UDP_LEN), "--get-server-output"],
            max(seconds, 3.0),
            port,
        )
        got_bps = steady_rate_bps(udp)
        udp_expect = pt.rate_bps * UDP_LEN / (UDP_LEN + 28)
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
            "rtt_err_us": round(rtt_err_us, 1),
            "rtt_ratio": rtt["rtt_median_us"] / (pt.delay_s * 1e6) if pt.delay_s else None,
            "rtt_ok": abs(rtt_err_us) <= rtt_target_s(pt.delay_s) * 1e6,
            "udp_bps": round(got_bps),
            "rate_ratio": got_bps / udp_expect,
            "rate_ok": abs(got_bps / udp_expect - 1) <= 0.03,
            "goodput_bps": round(goodput),
            "goodput_ratio": goodput / expect,
            "goodput_ok": abs(goodput / expect - 1) <= 0.03,
            "tcp_retransmits": tcp["end"]["sum_sent"].get("retransmits"),
            "emulator_cpu_pct": round(cpu_pct, 1) if cpu_pct is not None else None,
            "engine": meta["engine"],
            "seed": seed,
        }
        if pt.loss:
            lab.set_link("a", "b", loss=pt.loss)
            udp_bps = min(pt.rate_bps // 2, 20_000_000)
            udp = iperf3(
                lab,
                "a",
                "b",
                ["-u", "-b", str(udp_bps), "-l", "1000"],
                max(seconds / 2, 2.0),
                port + 2,
            )
            usum = udp["end"]["sum"]
            k, total = int(usum["lost_packets"]), int(usum["packets"])
            lo, hi = wilson(k, total)
            res.update(
                loss_observed=k / total if total else None,
                loss_packets=total,
                loss_ci95=[round(lo, 5), round(hi, 5)],
                loss_ratio=(k / total) / pt.loss if total else None,
                loss_ok=lo <= pt.loss <= hi,
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


def table(result: dict[str, Any]) -> Table:
    t = Table(title=f"emulator fidelity — engine {result['engine']}", show_edge=False)
    for c in (
        "rate",
        "delay",
        "RTT p50",
        "err",
        "",
        "UDP/rate",
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
            f"{p['rate_ratio']:.3f}",
            ok(p["rate_ok"]),
            f"{p['goodput_ratio']:.3f}",
            loss,
            ok(p.get("loss_ok")),
            f"{p['emulator_cpu_pct']}" if p["emulator_cpu_pct"] is not None else "—",
        )
    return t
