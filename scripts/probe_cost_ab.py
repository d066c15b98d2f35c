#!/usr/bin/env python3
"""Per-run cost of program variants on the same traffic, side by side (kernel bpf_stats).

    scripts/probe_cost_ab.py [--rounds 4] [--seconds 2.5] [--iperf "-P 4 -N -l 128"] \
        NAME=PATH[:DEFINE=VALUE,...] ...

Starts iperf3 over loopback in a private network namespace (ndcost<pid>, removed at exit),
then loads each variant in turn (the order reversed every other round), and for `--seconds`
reads the run count, run time and recursion misses of its tcp_probe program. Prints one line
per load and a median per variant; `--json` prints the medians as one object. For example,
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

from netdiag.kernel.bcc_loader import LoadEnv
from netdiag.trace import bpfstats, loaders


def _variant(text: str) -> tuple[str, Path, dict[str, int | str]]:
    name, _, rest = text.partition("=")
    path, _, defs = rest.partition(":")
    defines: dict[str, int | str] = {}
    for d in filter(None, defs.split(",")):
        k, _, v = d.partition("=")
        defines[k] = int(v) if v.isdigit() else v
    return name, Path(path), defines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("variants", nargs="+", type=_variant)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=2.5)
    ap.add_argument("--iperf", default="-P 4 -N -l 128", help="iperf3 client arguments")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    env = LoadEnv()
    for _n, path, d in a.variants:  # compile (and cache) each before the traffic starts
        loaders.load(path, d, env).close()
    ns = f"ndcost{os.getpid()}"
    run = ["ip", "netns", "exec", ns]
    subprocess.run(["ip", "netns", "add", ns], check=True)
    procs: list[subprocess.Popen[bytes]] = []
    fd = bpfstats.enable()
    res: dict[str, list[tuple[float, float, int]]] = {n: [] for n, _p, _d in a.variants}
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        procs.append(subprocess.Popen([*run, "iperf3", "-s", "-p", "5399"], **quiet))
        time.sleep(0.3)
        total = a.rounds * len(a.variants) * (a.seconds + 1) + 10
        client = [*run, "iperf3", "-c", "127.0.0.1", "-p", "5399", "-t", f"{total:.0f}"]
        procs.append(subprocess.Popen([*client, *shlex.split(a.iperf)], **quiet))
        time.sleep(1.5)
        for r in range(a.rounds):
            for name, path, d in a.variants if r % 2 == 0 else reversed(a.variants):
                lo = loaders.load(path, d, env)
                try:
                    time.sleep(0.3)
                    s0, t0 = bpfstats.read(lo.prog_fds()), time.monotonic()
                    time.sleep(a.seconds)
                    s1, t1 = bpfstats.read(lo.prog_fds()), time.monotonic()
                finally:
                    lo.close()
                k = next(k for k in s1 if "tcp_probe" in k)
                runs = s1[k].run_cnt - s0[k].run_cnt
                ns_run = (s1[k].run_time_ns - s0[k].run_time_ns) / max(runs, 1)
                miss = s1[k].recursion_misses - s0[k].recursion_misses
                res[name].append((ns_run, runs / (t1 - t0), miss))
                print(f"{name}: {ns_run:.1f} ns/run, {runs / (t1 - t0):.0f} runs/s, {miss} misses")
    finally:
        for p in reversed(procs):
            p.terminate()
            p.wait(timeout=10)
        bpfstats.disable(fd)
        subprocess.run(["ip", "netns", "del", ns], check=False)
    out = {
        n: {
            "ns_per_run_median": round(statistics.median(x[0] for x in v), 1),
            "ns_per_run": [round(x[0], 1) for x in v],
            "runs_per_s_median": round(statistics.median(x[1] for x in v)),
            "recursion_misses": sum(x[2] for x in v),
        }
        for n, v in res.items()
    }
    if a.json:
        print(json.dumps(out))
    else:
        for n, o in out.items():
            print(
                f"{n:>12}: median {o['ns_per_run_median']} ns/run {o['ns_per_run']}, "
                f"{o['runs_per_s_median']} runs/s, {o['recursion_misses']} misses"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
