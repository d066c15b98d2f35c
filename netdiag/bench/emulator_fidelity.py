"""One grid point of `netdiag bench emulator`: a two-node lab measured from outside the emulator.

- RTT: `ping` (idle link) against the configured delay, before and after the lab's calibration
  (`netdiag.lab.calibrate`) in the same lab, side by side; goal |err| <= 0.1 ms + 0.5 %;
- rate: `iperf3 -u` at 1.1 x the rate, the receiving interface's kernel byte counter over the
  steady part; target |err| <= 3 % (not judged when the sender could not fill the link);
- TCP goodput: `iperf3 -C bbr` against the rate x 1448/1500 (informational);
- loss: datagrams the sender's interface handed to the link vs what the receiver's got; the
  configured value must lie in the Wilson 95 % interval;
- CPU: the link forwarder's CPU time during the TCP run, % of one core (userspace engine).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from netdiag.errors import NetdiagError
from netdiag.lab.calibrate import expected_rtt_us, goal_us
from netdiag.lab.iperf import iperf3
from netdiag.lab.lab import Lab
from netdiag.lab.ping import ping_rtt
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


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a binomial proportion k/n."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def cpu_ticks(pid: int) -> int:
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


LOSS_SAMPLES = 5000  # datagrams per loss measurement: 95 % CI about ±0.3 % at 1 %
UDP_LEN = 1400  # datagram payload; the IP packet is 28 bytes more


def measure_point(
    pt: Point, engine: str, seconds: float, port: int, seed: int = 1
) -> dict[str, Any]:
    topo = two_node(pt.delay_s, pt.rate_bps, 0.0, queue="1bdp", engine=engine, seed=seed)
    # built uncalibrated, so the same link is measured before and after its calibration
    with Lab.up(topo, calibrate=False) as lab:
        for n in ("a", "b"):
            lab.sysctl(n, "net.ipv4.tcp_rmem", BUFFERS)
            lab.sysctl(n, "net.ipv4.tcp_wmem", BUFFERS)
        # RTT on the idle link; judged on the median, which a single scheduling hiccup of this
        # shared host cannot move (the mean and p90 are reported next to it). A real link of
        # this rate also serializes the 84-byte probe each way.
        expect_rtt_us = expected_rtt_us(topo.links[0].shape)
        raw = ping_rtt(lab, "a", "b")
        cal = lab.calibrate().get(0, {})
        rtt = ping_rtt(lab, "a", "b")
        meta = lab.metadata()
        rtt_err_us = rtt["rtt_median_us"] - expect_rtt_us
        raw_err_us = raw["rtt_median_us"] - expect_rtt_us
        goal = goal_us(pt.delay_s * 1e6)
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
        t0, c0 = time.monotonic(), sum(cpu_ticks(p) for p in pids)
        tcp = iperf3(lab, "a", "b", ["-C", "bbr", "-O", "2"], seconds, port + 1)
        t1, c1 = time.monotonic(), sum(cpu_ticks(p) for p in pids)
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
            "rtt_ok": abs(rtt_err_us) <= goal,
            "rtt_goal_us": round(goal, 1),
            # the same link before its calibration, and what the lab itself reported
            "rtt_uncalibrated_median_us": raw["rtt_median_us"],
            "rtt_err_uncalibrated_us": round(raw_err_us, 1),
            "rtt_ok_uncalibrated": abs(raw_err_us) <= goal,
            "calibration_overhead_us": cal.get("overhead_us"),
            "calibration_correction_us": cal.get("correction_us"),
            "calibration_residual_us": cal.get("residual_us"),
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
