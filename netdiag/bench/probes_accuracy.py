"""How true the probes' figures are: `netdiag bench probes accuracy`.

A lab link of known delay and rate (netdiag.lab, userspace engine): min RTT from tcp_peers,
sock_diag and ping against the configured delay; BDP from `bdp`'s derivation against rate ×
delay; retransmits from tcp_peers against nstat TcpRetransSegs, tcp_info and bcc's tcpretrans
(same tracepoint); cwnd vs `ss -ti`.
"""

from __future__ import annotations

import re
import subprocess
import time
from typing import Any

from netdiag.bench import output
from netdiag.bench.probes import Progress, _require
from netdiag.bench.tcpretrans import TcpRetrans
from netdiag.bench.traffic import make_pair, nstat_abs
from netdiag.diagnose import Sample, judge_samples
from netdiag.errors import NetdiagError
from netdiag.lab import ping
from netdiag.measure import bdp as mbdp
from netdiag.measure import sockdiag
from netdiag.report.results import ResultBuilder
from netdiag.trace import engine, manifest
from netdiag.trace.pipeline import Pipeline


def _ping_min_ms(lab: Any, count: int = 10) -> float | None:
    r = lab.exec("a", ["ping", "-c", str(count), "-i", "0.2", "-q", lab.addr("b")])
    got = ping.summaries(r.stdout)
    return got[0]["rtt_min_us"] / 1e3 if got else None


def _ss_cwnd(ns: str, port: int) -> int | None:
    r = subprocess.run(
        ["ip", "netns", "exec", ns, "ss", "-tinH", "dport", f"= :{port}"],
        capture_output=True,
        text=True,
    )
    m = re.search(r"\bcwnd:(\d+)", r.stdout)
    return int(m.group(1)) if m else None


def _one_segment_skbs(ns: str) -> list[str]:
    """gso_max_segs 1 on every link of a namespace: TCP then builds one-segment skbs, so the
    retransmit tracepoint (per skb) and TcpRetransSegs (per segment) count the same unit."""
    out = subprocess.run(["ip", "-n", ns, "-o", "link"], capture_output=True, text=True).stdout
    devs = [ln.split(":")[1].strip().split("@")[0] for ln in out.splitlines() if ": lo:" not in ln]
    for d in devs:
        subprocess.run(["ip", "-n", ns, "link", "set", "dev", d, "gso_max_segs", "1"], check=True)
    return devs


def accuracy(
    delay_ms: float = 20.0,
    rate_mbit: float = 50.0,
    loss: float = 0.002,
    nbytes: int = 8 << 20,
    one_segment: bool = True,
    progress: Progress = lambda _m: None,
    hook: str = "tracepoint",
) -> dict[str, Any]:
    from netdiag.lab import Lab, two_node

    _require("ip", "ping", "ss", "nstat")
    truth_rtt_us = delay_ms * 1000
    truth_bdp = rate_mbit * 1e6 / 8 * delay_ms / 1000
    topo = two_node(delay_s=delay_ms / 1000, rate_bps=int(rate_mbit * 1e6), loss=loss, name="trace")
    probe = manifest.load("tcp_peers")
    with Lab.up(topo) as lab:
        lab_engine = lab.metadata().get("engine")
        a, b = lab.ns("a"), lab.ns("b")
        if one_segment:
            _one_segment_skbs(a)
        ping_ms = _ping_min_ms(lab)
        progress(f"lab up ({lab.metadata().get('engine')} engine): ping min {ping_ms} ms")
        pair = make_pair(b, a, lab.addr("b"), echo=True)
        cookie = pair.cookie
        tr = TcpRetrans()
        try:
            defines = engine.defines_for(probe, (pair.port,), False)
            with engine.Session(probe, defines, hook=hook) as s:
                hook_line = s.hook_line()
                n0 = nstat_abs(a, "TcpRetransSegs")
                t0 = time.monotonic()
                pair.send(nbytes)
                samples: list[sockdiag.TcpConn] = []
                times: list[float] = []
                while pair.got[0] < nbytes:  # sock_diag samples while the bulk runs (for bdp)
                    now = time.monotonic()
                    got = [c for c in sockdiag.snapshot(a) if c.cookie == cookie]
                    samples += got
                    times += [now] * len(got)
                    time.sleep(0.1)
                    if time.monotonic() - t0 > 120:
                        raise NetdiagError(
                            "transfer over the lab link took > 120 s", "check the lab"
                        )
                elapsed = time.monotonic() - t0
                pair.ping_pong(3)
                nstat_retrans = nstat_abs(a, "TcpRetransSegs") - n0
                end_diag = next(c for c in sockdiag.snapshot(a) if c.cookie == cookie)
                ss_cwnd = _ss_cwnd(a, pair.port)
                snap = Pipeline(s).step().snap  # the pipeline trace-peers runs, no stages
                misses = s.misses()
        finally:
            bcc_count = tr.stop(pair.port)
            pair.close()
    row = next(r for r in snap.rows if r["sock_cookie"] == cookie)
    rep = mbdp.report(samples or [end_diag], times=times if samples else None)
    info = end_diag.info
    assert info is not None

    def err_pct(v: float | None, truth: float) -> float | None:
        return None if v is None else round((v - truth) / truth * 100, 2)

    probe_bdp = (
        (rep.bw_bps / 8 * row["srtt_min_us"] / 1e6) if rep.bw_bps and row["srtt_min_us"] else None
    )
    return {
        "benchmark": "probes accuracy",
        "lab": {
            "engine": lab_engine,
            "delay_ms": delay_ms,
            "rate_mbit": rate_mbit,
            "loss": loss,
            "bytes": nbytes,
            "goodput_bps": round(nbytes * 8 / elapsed),
            "client_gso_max_segs_1": one_segment,
        },
        "min_rtt_us": {
            "truth": truth_rtt_us,
            "tcp_peers": row["srtt_min_us"],
            "sock_diag": info.min_rtt_us,
            "ping": round(ping_ms * 1000) if ping_ms else None,
        },
        "min_rtt_error_pct": {
            "tcp_peers": err_pct(row["srtt_min_us"], truth_rtt_us),
            "sock_diag": err_pct(info.min_rtt_us, truth_rtt_us),
        },
        "bdp_bytes": {
            "truth": round(truth_bdp),
            "bdp": rep.bdp_bytes,
            "bw_source": rep.bw_source,
            "bw_bps": rep.bw_bps,
            "tcp_peers_rtt_x_bw": round(probe_bdp) if probe_bdp else None,
        },
        "bdp_error_pct": err_pct(rep.bdp_bytes, truth_bdp),
        "retransmits": {
            "tcp_peers_events": row["retrans"],
            "tcpretrans_bcc_events": bcc_count,
            "tcpretrans_error": tr.error,
            "nstat_TcpRetransSegs": nstat_retrans,
            "tcp_info_total_retrans_segs": info.total_retrans,
            "recursion_misses": misses.get("tracepoint__tcp__tcp_retransmit_skb", 0),
        },
        "cwnd": {"tcp_peers": row["snd_cwnd"], "sock_diag": info.snd_cwnd, "ss": ss_cwnd},
        # samples were taken ~0.1 s apart (the loop above); the engine needs only their spacing
        "verdict": judge_samples(
            [Sample(0.1 * k, c) for k, c in enumerate(samples or [end_diag])]
        ).verdict,
        "lost_events": snap.stats.get("lost_events", 0) + snap.stats.get("recursion_misses", 0),
        "hook": hook_line,
    }


def accuracy_result(doc: dict[str, Any], parameters: dict[str, Any] | None = None) -> ResultBuilder:
    """One summary table per quantity (min_rtt_us, min_rtt_error_pct, bdp_bytes, retransmits,
    cwnd): one row, one column per source (truth, tcp_peers, sock_diag, ss, …); the lab link
    in metadata. Also converts the JSON of older netdiag versions."""
    lab = doc.get("lab") or {}
    params = parameters or {
        "delay_ms": lab.get("delay_ms"),
        "rate_mbit": lab.get("rate_mbit"),
        "loss": lab.get("loss"),
        "bytes": lab.get("bytes"),
    }
    res = output.new("probes accuracy", params, link_engine=lab.get("engine"), lab=lab)
    figures: dict[str, Any] = {}
    for k, v in doc.items():
        if isinstance(v, dict) and k != "lab":
            res.add_summary(k, output.flat(v))
        elif output.scalar(v) and k != "benchmark":
            figures[k] = v
    res.add_summary("figures", figures)
    return res
