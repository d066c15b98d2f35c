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
A pseudo-define `NOSTATS=1` loads the variant with the kernel's run-time stats off
(BPF_ENABLE_STATS not held: no clock reads around each run; its ns/run reads 0), to measure
what the stats accounting itself costs. `NAME=trace-peers[:ARG,...]` runs the whole tracer
(`netdiag trace-peers --json`, each ARG one of its options, e.g. `--no-bpf-stats`) during the
load, started before the window and stopped after it, and also reports its user+system CPU
over the window (`tracer_cpu_pct`, from /proc/PID/task/*/schedstat); its ns/run and
runs/s are from its own lines, over its stats windows (before each read), so its runs/s
counts every run of the program, as the other variants do. `--veth`: iperf3 over
the testbed's client — router — server veth path (as `netdiag bench probes overhead`)
instead of loopback in one namespace. For example,
before / after a change to bpf/tcp_peers.bpf.c:

    git show main:bpf/tcp_peers.bpf.c > /tmp/before.bpf.c   # netdiag.h is found in bpf/
    scripts/probe_cost_ab.py before=/tmp/before.bpf.c after=bpf/tcp_peers.bpf.c \
        sampled=bpf/tcp_peers.bpf.c:SAMPLE_NS=1000000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from netdiag.bench import testbed
from netdiag.bench.probes import cpu_ns
from netdiag.kernel.bcc_loader import LoadEnv
from netdiag.trace import bpfstats, loaders


def _variant(text: str) -> tuple[str, Path | None, dict[str, int | str]]:
    name, _, rest = text.partition("=")
    path, _, defs = rest.partition(":")
    defines: dict[str, int | str] = {}
    if path == "trace-peers":  # its options, not defines
        return name, None, {"TRACER": defs}
    for d in filter(None, defs.split(",")):
        k, _, v = d.partition("=")
        defines[k] = int(v) if v.isdigit() else v
    if path == "raw-floor":
        return name, None, {"RAW_FLOOR": 1, **defines}
    return name, None if path == "none" else Path(path), defines


def _cpu_ns(pid: int) -> int:
    return cpu_ns(pid) or 0


class _Tracer:
    """The whole `netdiag trace-peers --json` child; ready once its first line is out."""

    def __init__(self, args: str) -> None:
        exe = Path(sys.executable).with_name("netdiag")
        argv = [str(exe) if exe.exists() else "netdiag", "trace-peers", "--json"]
        argv += [a.replace("=", " ", 1) if a.startswith("--") else a for a in args.split(",") if a]
        self.p = subprocess.Popen(
            shlex.split(" ".join(argv)),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.p.stdout is not None
        first = self.p.stdout.readline()
        if not first.startswith("{"):
            self.close()
            raise RuntimeError(f"trace-peers did not start: {first!r}")
        self.lines = [json.loads(first)]

    def prog_fds(self) -> dict[str, int]:
        return {}  # its programs are fds of the child: ns/run comes from its own lines

    def close(self) -> None:
        self.p.terminate()
        out, _ = self.p.communicate(timeout=30)
        self.lines += [json.loads(x) for x in out.splitlines() if x.startswith("{")]


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
    ap.add_argument("--veth", action="store_true", help="the testbed's veth path, not loopback")
    a = ap.parse_args()
    env = LoadEnv()
    for _n, path, d in a.variants:  # compile (and cache) each before the traffic starts
        if path is not None:
            loaders.load(path, _defines(d), env).close()
    with contextlib.ExitStack() as stack:
        if a.veth:
            p3 = stack.enter_context(testbed.path3(rate_mbit=None, one_segment_skbs=False))
            server, client = p3.exec(p3.server), [*p3.exec(p3.client), "iperf3", "-c", p3.server_ip]
        else:
            ns = f"ndcost{os.getpid()}"
            subprocess.run(["ip", "netns", "add", ns], check=True)
            stack.callback(subprocess.run, ["ip", "netns", "del", ns], check=False)
            subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
            server = ["ip", "netns", "exec", ns]
            client = [*server, "iperf3", "-c", "127.0.0.1"]
        return _rounds(a, env, server, [*client, "-p", "5399", *shlex.split(a.iperf)])
    return 0


def _defines(d: dict[str, int | str]) -> dict[str, int | str]:
    return {k: v for k, v in d.items() if k != "NOSTATS"}


def _rounds(a: argparse.Namespace, env: LoadEnv, server: list[str], client: list[str]) -> int:
    procs: list[subprocess.Popen[bytes]] = []
    fd: int | None = None
    res: dict[str, list[tuple[float, float, int, float, float]]] = {
        n: [] for n, _p, _d in a.variants
    }
    try:  # everything made from here on is undone in `finally`, whatever fails
        dn = subprocess.DEVNULL
        procs.append(
            subprocess.Popen([*server, "iperf3", "-s", "-p", "5399"], stdout=dn, stderr=dn)
        )
        time.sleep(0.3)
        total = a.rounds * len(a.variants) * (a.seconds + 1) + 10
        if not a.throughput:
            procs.append(subprocess.Popen([*client, "-t", f"{total:.0f}"], stdout=dn, stderr=dn))
            time.sleep(1.5)
        for r in range(a.rounds):
            for name, path, d in a.variants if r % 2 == 0 else reversed(a.variants):
                lo: Any = None
                want_stats = not d.get("NOSTATS") and "TRACER" not in d
                if want_stats and fd is None:
                    fd = bpfstats.enable()
                elif not want_stats and fd is not None:
                    bpfstats.disable(fd)
                    fd = None
                if path is not None:
                    lo = loaders.load(path, _defines(d), env)
                elif d.get("RAW_FLOOR"):
                    lo = _RawFloor()
                elif "TRACER" in d:
                    lo = _Tracer(str(d["TRACER"]))
                try:
                    fds = lo.prog_fds() if lo is not None else {}
                    if not a.throughput:
                        time.sleep(0.3)
                    cpu0 = _cpu_ns(lo.p.pid) if isinstance(lo, _Tracer) else 0
                    s0, t0 = bpfstats.read(fds), time.monotonic()
                    bps = 0.0
                    if a.throughput:
                        cmd = [*client, "-t", str(a.seconds), "-J"]
                        got = subprocess.run(cmd, capture_output=True, text=True, check=True)
                        bps = json.loads(got.stdout)["end"]["sum_received"]["bits_per_second"]
                    else:
                        time.sleep(a.seconds)
                    s1, t1 = bpfstats.read(fds), time.monotonic()
                    cpu = (
                        (_cpu_ns(lo.p.pid) - cpu0) / (t1 - t0) / 1e7
                        if isinstance(lo, _Tracer)
                        else 0.0
                    )
                finally:
                    if lo is not None:
                        lo.close()
                k = next((k for k in s1 if "tcp_probe" in k), None)
                z = bpfstats.ProgStats(0, 0, 0)
                e0, e1 = s0.get(k, z) if k else z, s1.get(k, z) if k else z
                runs = e1.run_cnt - e0.run_cnt
                ns_run = (e1.run_time_ns - e0.run_time_ns) / max(runs, 1)
                miss = e1.recursion_misses - e0.recursion_misses
                rps = runs / (t1 - t0)
                if isinstance(lo, _Tracer):  # its own kernel-measured figures (if stats on)
                    windows = [x for x in lo.lines[1:] if x.get("bpf_runs") is not None]
                    busy = [x for x in windows if x["bpf_runs"] > 0]
                    runs = sum(int(x["bpf_runs"]) for x in busy)
                    ns_tot = sum(x["bpf_ns_per_event"] * x["bpf_runs"] for x in busy)
                    ns_run = ns_tot / max(runs, 1)  # over its stats windows (before each read)
                    miss = sum(int(x.get("lost_events", 0)) for x in lo.lines)
                    # runs/s inside its stats windows: every run of the program, as the other
                    # variants count them (its events_per_s counts only its rows' events)
                    win = sum(float(x.get("bpf_stats_window_s") or 0) for x in windows)
                    rps = runs / win if win > 0 else 0.0
                res[name].append((ns_run, rps, miss, bps, cpu))
                print(
                    f"{name}: {ns_run:.1f} ns/run, {rps:.0f} runs/s, {miss} misses"
                    + (f", {bps / 1e9:.2f} Gbit/s" if a.throughput else "")
                    + (f", tracer CPU {cpu:.2f} %" if isinstance(lo, _Tracer) else ""),
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
        base = next((m for m, path, d in a.variants if path is None and not d), None)
        if a.throughput and base is not None and n != base:  # per round: variant / none
            ratios = [x[3] / y[3] for x, y in zip(v, res[base], strict=True) if y[3]]
            out[n]["ratio_to_none_median"] = round(statistics.median(ratios), 4)
            out[n]["ratio_to_none"] = [round(r, 3) for r in ratios]
        if any(x[4] for x in v):
            out[n]["tracer_cpu_pct_median"] = round(statistics.median(x[4] for x in v), 2)
    if a.json:
        print(json.dumps(out))
    else:
        for n, o in out.items():
            print(
                f"{n:>12}: median {o['ns_per_run_median']} ns/run {o['ns_per_run']}, "
                f"{o['runs_per_s_median']} runs/s, {o['recursion_misses']} misses"
                + (f", {o['gbps_median']} Gbit/s {o['gbps']}" if a.throughput else "")
                + (f", /none {o['ratio_to_none_median']}" if "ratio_to_none_median" in o else "")
                + (
                    f", tracer CPU {o['tracer_cpu_pct_median']} %"
                    if "tracer_cpu_pct_median" in o
                    else ""
                )
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
