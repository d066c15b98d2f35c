"""`netdiag bench diagnose`: does the verdict engine name the limit the lab built?

One two-node lab (userspace link engine: rate, delay, loss, queue); per scenario the link is
reshaped live, namespace sysctls / routes set, a workload started (iperf3 or the socket
workloads in diagnose_load), then the engine judges a window of the kernel's own evidence —
it is never told the lab's knobs (no --rate). The scenario's subject (the bulk connection, the
idle one, the listener) is compared with the verdict the scenario was built to produce.
"""

from __future__ import annotations

import contextlib
import json
import math
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from netdiag.diagnose import VERDICTS, Finding
from netdiag.diagnose.collect import Selection
from netdiag.diagnose.run import Report
from netdiag.diagnose.run import run as run_diagnose
from netdiag.lab import Lab, two_node
from netdiag.report.results import ResultBuilder

PORT = 5301
MTU = 1500
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Scenario:
    name: str
    expect: str
    delay_ms: float
    rate_mbit: float
    cc: str = "cubic"
    loss: float = 0.0
    queue_bdp: float = 1.0
    queue_pkts: int = 0
    workload: str = "iperf"  # iperf | idle | slow | accept
    iperf_args: tuple[str, ...] = ()
    sysctls: tuple[tuple[str, str, str], ...] = ()  # (node, name, value)
    cwnd_lock: int = 0  # route a -> b with `cwnd lock N`
    read_rate: float = 0.0  # slow reader, bytes/s
    backlog: int = 4
    vantage: str = "a"  # the node whose namespace diagnose runs in
    warmup_s: float = 3.0
    quick: bool = False

    def queue_packets(self) -> int:
        if self.queue_pkts:
            return self.queue_pkts
        bdp = self.rate_mbit * 1e6 / 8 * self.delay_ms / 1000
        return max(8, math.ceil(self.queue_bdp * bdp / MTU))


SMALL_BUF = "4096 65536 65536"
SCENARIOS: tuple[Scenario, ...] = (
    Scenario("idle-cubic-20ms", "idle", 20, 50, workload="idle", quick=True),
    Scenario("idle-bbr-100ms-primed", "idle", 100, 20, cc="bbr", workload="idle", warmup_s=2),
    Scenario("app-2M-on-50M-cubic", "app-limited", 50, 50, iperf_args=("-b", "2M"), quick=True),
    Scenario("app-5M-on-20M-bbr", "app-limited", 80, 20, cc="bbr", iperf_args=("-b", "5M")),
    Scenario(
        "sndbuf-64k-cubic-50ms",
        "sndbuf-limited",
        50,
        50,
        sysctls=(("a", "net.ipv4.tcp_wmem", SMALL_BUF),),
        quick=True,
    ),
    Scenario(
        "sndbuf-64k-bbr-80ms",
        "sndbuf-limited",
        80,
        20,
        cc="bbr",
        sysctls=(("a", "net.ipv4.tcp_wmem", SMALL_BUF),),
    ),
    Scenario(
        "rwnd-64k-cubic-50ms",
        "rwnd-limited",
        50,
        50,
        sysctls=(("b", "net.ipv4.tcp_rmem", SMALL_BUF),),
        quick=True,
    ),
    Scenario(
        "rwnd-128k-bbr-80ms",
        "rwnd-limited",
        80,
        20,
        cc="bbr",
        sysctls=(("b", "net.ipv4.tcp_rmem", "4096 131072 131072"),),
    ),
    Scenario(
        "rwnd-64k-receiver-view",
        "rwnd-limited",
        50,
        50,
        sysctls=(("b", "net.ipv4.tcp_rmem", SMALL_BUF),),
        vantage="b",
    ),
    Scenario("cwnd-lock10-cubic-50ms", "cwnd-limited", 50, 50, cwnd_lock=10, quick=True),
    Scenario("cwnd-lock16-bbr-40ms", "cwnd-limited", 40, 50, cc="bbr", cwnd_lock=16),
    Scenario("loss-1pct-cubic-40ms", "loss-limited", 40, 50, loss=0.01, quick=True),
    Scenario("loss-0.5pct-cubic-80ms", "loss-limited", 80, 30, loss=0.005),
    Scenario("loss-2pct-reno-30ms", "loss-limited", 30, 30, cc="reno", loss=0.02),
    Scenario("bloat-8bdp-cubic-20ms", "rtt-inflated", 20, 20, queue_bdp=8, warmup_s=5, quick=True),
    Scenario("bloat-300pkt-cubic-40ms", "rtt-inflated", 40, 10, queue_pkts=300, warmup_s=6),
    Scenario(
        "slow-reader-cubic-40ms",
        "receiver-slow",
        40,
        50,
        workload="slow",
        read_rate=200_000,
        quick=True,
    ),
    Scenario(
        "slow-reader-bbr-20ms",
        "receiver-slow",
        20,
        30,
        cc="bbr",
        workload="slow",
        read_rate=500_000,
    ),
    Scenario(
        "slow-reader-receiver-view",
        "receiver-slow",
        40,
        50,
        workload="slow",
        read_rate=300_000,
        vantage="b",
    ),
    Scenario(
        "accept-backlog2-20ms",
        "accept-queue-overflow",
        20,
        50,
        workload="accept",
        backlog=2,
        vantage="b",
        quick=True,
    ),
    Scenario(
        "accept-backlog8-60ms",
        "accept-queue-overflow",
        60,
        20,
        workload="accept",
        backlog=8,
        vantage="b",
    ),
    Scenario("path-bbr-120ms-20M", "path-limited", 120, 20, cc="bbr", quick=True),
    Scenario("path-cubic-20ms-30M", "path-limited", 20, 30, queue_bdp=0.5),
    Scenario("path-bbr-1pct-loss-40ms", "path-limited", 40, 30, cc="bbr", loss=0.01),
)


@dataclass
class Outcome:
    scenario: Scenario
    predicted: str
    finding: Finding | None
    samples: list[dict[str, Any]] = field(default_factory=list)  # the subject's raw samples
    report: Report | None = None


def _route_lock(lab: Lab, lock: int) -> Callable[[], None]:
    """Add `cwnd lock N` to a's route to b; returns the undo (the route as it was)."""
    dst = lab.addr("b")
    got = lab.exec("a", ["ip", "-o", "route", "get", dst], check=True).stdout.split()
    before = lab.exec("a", ["ip", "-o", "route", "show", "match", dst], check=True).stdout
    route = next((ln.split() for ln in before.splitlines() if ln.strip()), None)
    spec = [dst + "/32"] if route is None or route[0] == "default" else [route[0]]
    for key in ("via", "dev", "src"):
        if key in got:
            spec += [key, got[got.index(key) + 1]]
    lab.exec("a", ["ip", "route", "replace", *spec, "cwnd", "lock", str(lock)], check=True)

    def undo() -> None:
        lab.exec("a", ["ip", "route", "replace", *spec], check=False)

    return undo


def _prime_metrics(lab: Lab, port: int, lock: int) -> None:
    """One short connection a -> b, closed both ways: the kernel creates b's tcp_metrics
    entry from the route (with its locked cwnd) when the socket reaches TIME_WAIT, and the
    next connection's tcp_init_metrics applies it — the first connection to a destination
    never sees a route's `cwnd lock` otherwise."""
    b = lab.addr("b")
    srv = _load(lab, "b", ["server", "--mode", "sink", "--port", str(port), "--bind", b])
    try:
        _wait_listen(lab, "b", port)
        code = (
            f"import socket; s = socket.create_connection(({b!r}, {port})); "
            "s.sendall(b'x' * 1000); s.shutdown(socket.SHUT_WR); s.recv(1); s.close()"
        )
        # sockets of the previous scenario may still close and write an entry from the old
        # route: flush and prime until the entry carries the locked value
        for _ in range(4):
            lab.exec("a", ["ip", "tcp_metrics", "flush", "all"], check=False)
            lab.exec("a", [sys.executable, "-c", code], timeout=10)
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:
                shown = lab.exec("a", ["ip", "tcp_metrics", "show", b]).stdout
                if f"cwnd {lock}" in shown:
                    return
                time.sleep(0.05)
    finally:
        srv.kill()
        srv.wait()


def _load(lab: Lab, node: str, args: list[str]) -> subprocess.Popen[Any]:
    return lab.popen(
        node,
        [sys.executable, "-m", "netdiag.bench.diagnose_load", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_listen(lab: Lab, node: str, port: int) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if lab.exec(node, ["ss", "-Htln", f"sport = :{port}"]).stdout.strip():
            return
        time.sleep(0.05)


@contextlib.contextmanager
def workload(lab: Lab, sc: Scenario, seconds: float, port: int) -> Iterator[None]:
    procs: list[subprocess.Popen[Any]] = []
    b = lab.addr("b")
    try:
        if sc.workload == "iperf":
            procs.append(
                lab.popen(
                    "b",
                    ["iperf3", "-s", "-1", "-p", str(port), "-B", b],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            _wait_listen(lab, "b", port)
            argv = ["iperf3", "-c", b, "-p", str(port), "-t", f"{seconds:g}", "-C", sc.cc]
            procs.append(
                lab.popen(
                    "a",
                    [*argv, *sc.iperf_args],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        else:
            mode = {"idle": "sink", "slow": "slow", "accept": "noaccept"}[sc.workload]
            srv = ["server", "--mode", mode, "--port", str(port), "--bind", b]
            srv += ["--seconds", f"{seconds + 5:g}", "--backlog", str(sc.backlog)]
            srv += ["--rate", str(sc.read_rate)]
            procs.append(_load(lab, "b", srv))
            _wait_listen(lab, "b", port)
            cmode = {"idle": "idle", "slow": "send", "accept": "flood"}[sc.workload]
            cli = ["client", "--mode", cmode, "--addr", b, "--port", str(port), "--cc", sc.cc]
            cli += ["--seconds", f"{seconds:g}", "--conns", str(4 * sc.backlog + 16)]
            if sc.workload == "idle" and sc.cc == "bbr":
                cli += ["--prime", str(1 << 20)]
            procs.append(_load(lab, "a", cli))
        yield
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=5)


def subject(report: Report, sc: Scenario, port: int) -> Finding | None:
    """The finding the scenario is about: the listener for accept scenarios, else the
    connection on the workload port that moved the most bytes (the idle one for idle)."""
    fs = report.findings
    if sc.workload == "accept":
        lst = [f for f in fs if f.scope in ("listener", "host") and "isten" in f.subject]
        lst += [f for f in fs if f.scope == "listener"]
        return lst[0] if lst else None
    conns = [f for f in fs if f.scope == "connection"]

    def moved(f: Finding) -> float:
        ev = f.evidence
        return float(ev.get("send_rate_bps") or 0) + float(ev.get("recv_rate_bps") or 0)

    return max(conns, key=moved) if conns else None


def run_scenario(
    lab: Lab, sc: Scenario, window_s: float, port: int, defaults: dict[tuple[str, str], str]
) -> Outcome:
    lab.set_link(
        "a",
        "b",
        delay_s=sc.delay_ms / 1000,
        rate_bps=int(sc.rate_mbit * 1e6),
        loss=sc.loss,
        queue_pkts=sc.queue_packets(),
    )
    for (node, name), value in defaults.items():
        lab.sysctl(node, name, value)
    # the cc is chosen per socket (iperf3 -C, TCP_CONGESTION): a child namespace may set only
    # the host's allowed ccs as its default
    for node, name, value in sc.sysctls:
        lab.sysctl(node, name, value)
    for node in ("a", "b"):  # no ssthresh cached from the previous scenario
        lab.exec(node, ["ip", "tcp_metrics", "flush", "all"], check=False)
    undo = _route_lock(lab, sc.cwnd_lock) if sc.cwnd_lock else None
    if sc.cwnd_lock:
        _prime_metrics(lab, port + 2000, sc.cwnd_lock)
    recorder = Recorder()
    try:
        with workload(lab, sc, sc.warmup_s + window_s + 2, port):
            time.sleep(sc.warmup_s)
            report = run_diagnose(
                Selection(ports=(port,), netns=lab.ns(sc.vantage)),
                window_s,
                on_sample=recorder,
            )
    finally:
        if undo is not None:
            undo()
    f = subject(report, sc, port)
    predicted = f.verdict if f is not None else "none"
    samples = recorder.of(f.sock_cookie if f is not None and f.scope == "connection" else None)
    return Outcome(sc, predicted, f, samples, report)


class Recorder:
    """Keeps every sample the engine saw, so a scenario's subject can become a fixture."""

    def __init__(self) -> None:
        self.rows: dict[int, list[dict[str, Any]]] = {}

    def __call__(self, t_s: float, conn: Any) -> None:
        self.rows.setdefault(conn.cookie, []).append({"t_s": t_s, "conn": asdict(conn)})

    def of(self, cookie: int | None) -> list[dict[str, Any]]:
        return self.rows.get(cookie, []) if cookie is not None else []


def confusion(outcomes: list[Outcome]) -> dict[str, dict[str, int]]:
    labels = [*VERDICTS, "none"]
    m: dict[str, dict[str, int]] = {e: dict.fromkeys(labels, 0) for e in VERDICTS}
    for o in outcomes:
        m[o.scenario.expect][o.predicted if o.predicted in labels else "none"] += 1
    return m


def run(
    *,
    quick: bool = False,
    window_s: float = 3.0,
    only: tuple[str, ...] = (),
    engine: str = "userspace",
    record_dir: Path | None = None,
    progress: Progress | None = None,
) -> tuple[ResultBuilder, list[Outcome]]:
    say = progress or (lambda _m: None)
    scenarios = [s for s in SCENARIOS if (s.quick or not quick)]
    if only:
        scenarios = [s for s in scenarios if any(o in s.name for o in only)]
    res = ResultBuilder(
        "diagnose",
        {"quick": quick, "window_s": window_s, "scenarios": [s.name for s in scenarios]},
        link_engine=engine,
    )
    outcomes: list[Outcome] = []
    topo = two_node(0.02, 50_000_000, 0.0, name="diag", engine=engine)
    with Lab.up(topo) as lab:
        res.link_engine = lab.engine.name
        defaults: dict[tuple[str, str], str] = {}
        for node in ("a", "b"):
            for name in ("net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"):
                out = lab.exec(node, ["sysctl", "-n", name]).stdout.split()
                defaults[(node, name)] = " ".join(out)
        for k, sc in enumerate(scenarios):
            say(f"[{k + 1}/{len(scenarios)}] {sc.name} (expect {sc.expect})")
            o = run_scenario(lab, sc, window_s, PORT + k, defaults)
            outcomes.append(o)
            ok = "ok" if o.predicted == sc.expect else "WRONG"
            say(f"    -> {o.predicted} {ok}" + (f": {o.finding.summary}" if o.finding else ""))
            res.record("scenarios", _row(o))
            if record_dir is not None and o.samples:
                record_dir.mkdir(parents=True, exist_ok=True)
                doc = {"scenario": asdict(sc), "predicted": o.predicted, "samples": o.samples}
                (record_dir / f"{sc.name}.json").write_text(json.dumps(doc, indent=0))
    summarize(res, outcomes)
    return res, outcomes


def _row(o: Outcome) -> dict[str, Any]:
    sc, f = o.scenario, o.finding
    return {
        "scenario": sc.name,
        "expected": sc.expect,
        "predicted": o.predicted,
        "correct": o.predicted == sc.expect,
        "cc": sc.cc,
        "delay_ms": sc.delay_ms,
        "rate_mbit": sc.rate_mbit,
        "loss": sc.loss,
        "queue_pkts": sc.queue_packets(),
        "vantage": sc.vantage,
        "confidence": round(f.confidence, 2) if f else None,
        "severity": f.severity if f else None,
        "summary": f.summary if f else None,
        "fix": f.fix if f else None,
    }


def summarize(res: ResultBuilder, outcomes: list[Outcome]) -> None:
    n = len(outcomes)
    right = sum(o.predicted == o.scenario.expect for o in outcomes)
    real_as_path = sum(
        o.predicted == "path-limited" and o.scenario.expect not in ("path-limited", "idle")
        for o in outcomes
    )
    res.add_summary(
        "accuracy",
        {
            "scenarios": n,
            "correct": right,
            "accuracy": round(right / n, 3) if n else None,
            "real_limit_called_path_limited": real_as_path,
        },
    )
    for exp, row in confusion(outcomes).items():
        if any(row.values()):
            res.add_summary("confusion", {"expected": exp, **row})
