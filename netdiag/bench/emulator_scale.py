"""`netdiag bench emulator --scale`: star labs (a hub and N spokes), half the links under TCP
load, half pinged, all at once: does every link still meet the goals with N links busy?"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from typing import Any

from netdiag.bench.emulator_fidelity import PAYLOAD_SHARE, cpu_ticks
from netdiag.lab import ping
from netdiag.lab.calibrate import expected_rtt_us, goal_us
from netdiag.lab.lab import Lab
from netdiag.lab.topology import LinkShape, LinkSpec, NodeSpec, Topology, default_address, validate


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
        c0, w0 = sum(cpu_ticks(p) for p in pids), time.monotonic()
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
        expect_us = expected_rtt_us(topo.links[0].shape)  # + the probe's serialization
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
        cpu = (sum(cpu_ticks(p) for p in pids) - c0) / os.sysconf("SC_CLK_TCK")
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
            "rtt_ok": worst_rtt <= goal_us(delay_s * 1e6),
            "goodput_ratio_min": round(min(ratios), 4) if ratios else None,
            "goodput_ratio_mean": round(statistics.fmean(ratios), 4) if ratios else None,
            "rate_ok": bool(ratios) and all(abs(r - 1) <= 0.03 for r in ratios),
            "emulator_cpu_pct": round(cpu_pct, 1),
            "engine": lab.metadata()["engine"],
        }
