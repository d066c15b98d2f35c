"""`netdiag bdp`: per-connection bandwidth-delay product and what limits each connection."""

from __future__ import annotations

import click
from rich.table import Table

from netdiag.cli.diagnose import parse_window
from netdiag.diagnose.collect import Collected, Selection, collect, parse_peer
from netdiag.diagnose.host import HostFacts
from netdiag.diagnose.run import judge_collected, route_cwnd_locks
from netdiag.errors import InputError, NetdiagError
from netdiag.kernel import sysctl
from netdiag.measure import bdp as mbdp
from netdiag.output import console, emit_json
from netdiag.tune.buffers import parse_rate_bps


def _max_of(name: str, netns_name: str | None) -> int | None:
    try:
        return int(sysctl.read(name, netns_name).split()[-1])
    except Exception:  # a sysctl we cannot read only drops a hint from the verdict
        return None


def _addrs(col: Collected) -> list[str]:
    return sorted({s[-1].conn.raddr for s in col.conns.values() if s})


def _probe(target: str, netns_name: str | None, as_json: bool) -> None:
    from netdiag.measure import rttprobe

    res = rttprobe.handshake_rtt(target, netns_name=netns_name)
    obj = {
        "target": res.target,
        "sent": res.sent,
        "answered": res.answered,
        "refused": res.refused,
        "rtt_us": res.rtt_us,
        "min_rtt_us": res.min_rtt_us,
    }
    if as_json:
        emit_json(obj)
    elif res.min_rtt_us is not None:
        click.echo(
            f"{res.target}: handshake RTT min {res.min_rtt_us / 1000:.3f} ms "
            f"({res.answered}/{res.sent} answered{', port closed (RST)' if res.refused else ''})"
        )
    if not res.answered:
        raise NetdiagError(
            f"no answer from {res.target} to {res.sent} SYN probes",
            "check the address, the route and any firewall dropping SYNs",
        )


@click.command("bdp")
@click.option("--peer", help="Only connections to ADDR, ADDR:PORT or [V6ADDR]:PORT.")
@click.option("--port", "ports", multiple=True, type=int, help="Only connections with this port.")
@click.option("--netns", "netns_name", help="Connections of this named network namespace.")
@click.option(
    "--window", "window_text", default="1", show_default=True, help="Sampling window, seconds."
)
@click.option(
    "--samples", type=int, default=5, show_default=True, help="sock_diag samples in the window."
)
@click.option("--rate", "rate_text", help="The path's known bottleneck rate, e.g. 50mbit.")
@click.option(
    "--probe",
    "probe_target",
    metavar="HOST:PORT",
    help="Measure handshake RTT with SYN probes instead (IPv4 or [IPv6]:PORT).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def bdp(
    peer: str | None,
    ports: tuple[int, ...],
    netns_name: str | None,
    window_text: str,
    samples: int,
    rate_text: str | None,
    probe_target: str | None,
    as_json: bool,
) -> None:
    """Min RTT, delivery rate, BBR estimates, BDP and a verdict per TCP connection (no eBPF)."""
    if probe_target:
        _probe(probe_target, netns_name, as_json)
        return
    window = parse_window(window_text)
    if samples < 2:
        raise InputError(f"--samples {samples} must be ≥ 2", "e.g. --samples 5 --window 1")
    rate = parse_rate_bps(rate_text) if rate_text else None
    if rate is not None and rate <= 0:
        raise InputError(f"--rate {rate_text} must be > 0", "e.g. --rate 50mbit")
    sel = Selection(ports=ports, peer=parse_peer(peer) if peer else None, netns=netns_name)
    sel.validate()
    data = collect(sel, window, interval_s=window / (samples - 1))
    data.listeners = {}
    data.counters_before = data.counters_after = {}
    rmem = _max_of("net.ipv4.tcp_rmem", netns_name)
    wmem = _max_of("net.ipv4.tcp_wmem", netns_name)
    facts = HostFacts(rmem_max=rmem, wmem_max=wmem)
    findings, _wins = judge_collected(
        data, facts, rate_bps=rate, route_locks=route_cwnd_locks(_addrs(data), netns_name)
    )
    by_cookie = {f.sock_cookie: f for f in findings if f.scope == "connection"}
    reports = [
        mbdp.report([x.conn for x in s], rmem, wmem, times=[x.t_s for x in s])
        for s in data.conns.values()
        if s and s[-1].conn.state == "ESTABLISHED"
    ]
    reports.sort(key=lambda r: r.bdp_bytes or 0, reverse=True)
    if as_json:
        conns = []
        for r in reports:
            row = r.to_json()
            f = by_cookie.get(r.sock_cookie)
            if f is not None:
                row.update(
                    verdict=f.verdict,
                    severity=f.severity,
                    confidence=round(f.confidence, 2),
                    summary=f.summary,
                    fix=f.fix,
                    evidence=f.evidence,
                )
            conns.append(row)
        emit_json(
            {
                "connections": conns,
                "tcp_rmem_max_bytes": rmem,
                "tcp_wmem_max_bytes": wmem,
            }
        )
        return
    out = console()
    if not reports:
        out.print("no established TCP connections match")
        return
    t = Table(
        box=None,
        header_style="bold",
        caption="RTT in ms; rates in bit/s; limits are shares of busy time",
        caption_justify="left",
    )
    for col in (
        "PEER",
        "CC",
        "MINRTT",
        "SRTT",
        "RATE",
        "BW",
        "BDP",
        "CWND×MSS",
        "RWND",
        "SNDBUF",
        "CWND%",
    ):
        t.add_column(col, justify="left" if col in ("PEER", "CC") else "right", no_wrap=True)
    for r in reports:
        lim = r.limits
        t.add_row(
            r.peer[:21],
            r.cc or "-",
            f"{r.min_rtt_us / 1000:.2f}" if r.min_rtt_us else "-",
            f"{r.srtt_us / 1000:.2f}" if r.srtt_us else "-",
            _bps(r.delivery_rate_bps),
            _bps(r.bw_bps),
            mbdp.human_bytes(r.bdp_bytes) if r.bdp_bytes else "-",
            mbdp.human_bytes(r.cwnd_bytes) if r.cwnd_bytes else "-",
            f"{lim.rwnd:.0%}" if lim else "-",
            f"{lim.sndbuf:.0%}" if lim else "-",
            f"{lim.cwnd:.0%}" if lim else "-",
        )
    out.print(t)
    for r in reports:
        f = by_cookie.get(r.sock_cookie)
        if f is not None:
            out.print(f"{r.peer}: {f.summary}")
            if f.fix:
                out.print(f"  fix: {f.fix}")


def _bps(v: int | None) -> str:
    if not v:
        return "-"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if v >= div:
            return f"{v / div:.1f}{unit}"
    return str(v)
