#!/usr/bin/env python3
"""Per-run cost of program variants on the same traffic, side by side (kernel bpf_stats).

    scripts/probe_cost_ab.py [--rounds 4] [--seconds 2.5] [--iperf "-P 4 -N -l 128"] \
        NAME=PATH[:DEFINE=VALUE,...] ...

Starts iperf3 over loopback in a private network namespace (ndcost<pid>, removed at exit),
then loads each variant in turn (the order reversed every other round), and for `--seconds`
reads the run count, run time and recursion misses of its tcp_probe program. Prints one line
per load and a median per variant; `--json` prints the medians as one object. `--throughput`:
instead of one long client, one `iperf3 -t SECONDS` per load and its receive rate; a variant
`NAME=none` loads nothing (the baseline), `NAME=raw-floor` an empty raw tracepoint program on
tcp_probe (bcc in this process: what the hook costs without the tracepoint's perf record).
For example,
before / after a change to bpf/tcp_peers.bpf.c:

    git show main:bpf/tcp_peers.bpf.c > /tmp/before.bpf.c   # netdiag.h is found in bpf/
    scripts/probe_cost_ab.py before=/tmp/before.bpf.c after=bpf/tcp_peers.bpf.c \
        sampled=bpf/tcp_peers.bpf.c:SAMPLE_NS=1000000
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from netdiag.kernel.bcc_loader import LoadEnv
from netdiag.trace import bpfstats, loaders


def _variant(text: str) -> tuple[str, Path | None, dict[str, int | str]]:
    name, _, rest = text.partition("=")
    path, _, defs = rest.partition(":")
    defines: dict[str, int | str] = {}
    for d in filter(None, defs.split(",")):
        k, _, v = d.partition("=")
        defines[k] = int(v) if v.isdigit() else v
    if path == "raw-floor":
        return name, None, {"RAW_FLOOR": 1}
    return name, None if path == "none" else Path(path), defines


class _RawFloor:
    """An empty BPF_PROG_TYPE_RAW_TRACEPOINT program on tcp_probe, loaded by bcc."""

    def __init__(self) -> None:
        from netdiag.kernel import bcc_loader

        bcc = bcc_loader.import_bcc()
        self.b = bcc.BPF(text="RAW_TRACEPOINT_PROBE(tcp_probe) { return 0; }")

    def prog_fds(self) -> dict[str, int]:
        return {k.decode(): int(f.fd) for k, f in self.b.funcs.items()}

    def close(self) -> None:
        self.b.cleanup()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("variants", nargs="+", type=_variant)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=2.5)
    ap.add_argument("--iperf", default="-P 4 -N -l 128", help="iperf3 client arguments")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--throughput", action="store_true", help="one iperf3 run per load")
    a = ap.parse_args()
    env = LoadEnv()
    for _n, path, d in a.variants:  # compile (and cache) each before the traffic starts
        if path is not None:
            loaders.load(path, d, env).close()
    ns = f"ndcost{os.getpid()}"
    run = ["ip", "netns", "exec", ns]
    procs: list[subprocess.Popen[bytes]] = []
    fd: int | None = None
    res: dict[str, list[tuple[float, float, int, float]]] = {n: [] for n, _p, _d in a.variants}
    try:  # everything made from here on is undone in `finally`, whatever fails
        subprocess.run(["ip", "netns", "add", ns], check=True)
        fd = bpfstats.enable()
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        dn = subprocess.DEVNULL
        procs.append(subprocess.Popen([*run, "iperf3", "-s", "-p", "5399"], stdout=dn, stderr=dn))
        time.sleep(0.3)
        total = a.rounds * len(a.variants) * (a.seconds + 1) + 10
        client = [*run, "iperf3", "-c", "127.0.0.1", "-p", "5399", *shlex.split(a.iperf)]
        if not a.throughput:
            procs.append(subprocess.Popen([*client, "-t", f"{total:.0f}"], stdout=dn, stderr=dn))
            time.sleep(1.5)
        for r in range(a.rounds):
            for name, path, d in a.variants if r % 2 == 0 else reversed(a.variants):
                lo: Any = None
                if path is not None:
                    lo = loaders.load(path, d, env)
                elif d.get("RAW_FLOOR"):
                    lo = _RawFloor()
                try:
                    fds = lo.prog_fds() if lo is not None else {}
                    if not a.throughput:
                        time.sleep(0.3)
                    s0, t0 = bpfstats.read(fds), time.monotonic()
                    bps = 0.0
                    if a.throughput:
                        cmd = [*client, "-t", str(a.seconds), "-J"]
                        got = subprocess.run(cmd, capture_output=True, text=True, check=True)
                        bps = json.loads(got.stdout)["end"]["sum_received"]["bits_per_second"]
                    else:
                        time.sleep(a.seconds)
                    s1, t1 = bpfstats.read(fds), time.monotonic()
                finally:
                    if lo is not None:
                        lo.close()
                k = next((k for k in s1 if "tcp_probe" in k), None)
                z = bpfstats.ProgStats(0, 0, 0)
                e0, e1 = s0.get(k, z) if k else z, s1.get(k, z) if k else z
                runs = e1.run_cnt - e0.run_cnt
                ns_run = (e1.run_time_ns - e0.run_time_ns) / max(runs, 1)
                miss = e1.recursion_misses - e0.recursion_misses
                res[name].append((ns_run, runs / (t1 - t0), miss, bps))
                print(
                    f"{name}: {ns_run:.1f} ns/run, {runs / (t1 - t0):.0f} runs/s, {miss} misses"
                    + (f", {bps / 1e9:.2f} Gbit/s" if a.throughput else ""),
                    flush=True,
                )
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if fd is not None:
            bpfstats.disable(fd)
        subprocess.run(["ip", "netns", "del", ns], check=False)
    out: dict[str, dict[str, object]] = {}
    for n, v in res.items():
        out[n] = {
            "ns_per_run_median": round(statistics.median(x[0] for x in v), 1),
            "ns_per_run": [round(x[0], 1) for x in v],
            "runs_per_s_median": round(statistics.median(x[1] for x in v)),
            "recursion_misses": sum(x[2] for x in v),
        }
        if a.throughput:
            out[n]["gbps"] = [round(x[3] / 1e9, 2) for x in v]
            out[n]["gbps_median"] = round(statistics.median(x[3] for x in v) / 1e9, 3)
    if a.json:
        print(json.dumps(out))
    else:
        for n, o in out.items():
            print(
                f"{n:>12}: median {o['ns_per_run_median']} ns/run {o['ns_per_run']}, "
                f"{o['runs_per_s_median']} runs/s, {o['recursion_misses']} misses"
                + (f", {o['gbps_median']} Gbit/s {o['gbps']}" if a.throughput else "")
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
