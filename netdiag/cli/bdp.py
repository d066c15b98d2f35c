"""`netdiag bdp`: per-connection bandwidth-delay product and what limits each connection."""

from __future__ import annotations

import time
from collections import defaultdict

import click
from rich.console import Console
from rich.table import Table

from netdiag.errors import InputError
from netdiag.kernel import sysctl
from netdiag.measure import bdp as mbdp
from netdiag.measure import sockdiag
from netdiag.output import emit_json


def _max_of(name: str, netns_name: str | None) -> int | None:
    try:
        return int(sysctl.read(name, netns_name).split()[-1])
    except Exception:  # a sysctl we cannot read only drops a hint from the verdict
        return None


def _match(c: sockdiag.TcpConn, peer: str | None) -> bool:
    if not peer:
        return True
    host, sep, port = peer.rpartition(":")
    if sep and port.isdigit():
        return c.raddr == host.strip("[]") and c.rport == int(port)
    return c.raddr == peer


@click.command("bdp")
@click.option("--peer", help="Only connections to this ADDR or ADDR:PORT.")
@click.option("--port", "ports", multiple=True, type=int, help="Only connections with this port.")
@click.option("--netns", "netns_name", help="Connections of this named network namespace.")
@click.option(
    "--window", type=float, default=1.0, show_default=True, help="Sampling window, seconds."
)
@click.option(
    "--samples", type=int, default=5, show_default=True, help="sock_diag samples in the window."
)
@click.option(
    "--probe",
    "probe_target",
    metavar="HOST:PORT",
    help="Measure handshake RTT with SYN probes instead.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def bdp(
    peer: str | None,
    ports: tuple[int, ...],
    netns_name: str | None,
    window: float,
    samples: int,
    probe_target: str | None,
    as_json: bool,
) -> None:
    """Min RTT, delivery rate, BBR estimates, BDP and a verdict per TCP connection (no eBPF)."""
    if probe_target:
        from netdiag.measure import rttprobe

        res = rttprobe.handshake_rtt(probe_target, netns_name=netns_name)
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
        else:
            mr = f"{res.min_rtt_us / 1000:.3f} ms" if res.min_rtt_us is not None else "no answer"
            click.echo(
                f"{res.target}: handshake RTT min {mr} ({res.answered}/{res.sent} answered"
                f"{', port closed (RST)' if res.refused else ''})"
            )
        return
    if samples < 1 or window < 0:
        raise InputError("--samples must be ≥ 1 and --window ≥ 0", "e.g. --samples 5 --window 1")
    series: dict[int, list[sockdiag.TcpConn]] = defaultdict(list)
    for k in range(samples):
        if k:
            time.sleep(window / max(1, samples - 1))
        for c in sockdiag.snapshot(netns_name, ports=ports):
            if _match(c, peer) and c.state == "ESTABLISHED":
                series[c.cookie].append(c)
    rmem = _max_of("net.ipv4.tcp_rmem", netns_name)
    wmem = _max_of("net.ipv4.tcp_wmem", netns_name)
    reports = [mbdp.report(s, rmem, wmem) for s in series.values()]
    reports.sort(key=lambda r: r.bdp_bytes or 0, reverse=True)
    if as_json:
        emit_json(
            {
                "connections": [r.to_json() for r in reports],
                "tcp_rmem_max_bytes": rmem,
                "tcp_wmem_max_bytes": wmem,
            }
        )
        return
    out = Console() if Console().is_terminal else Console(width=100)
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
        out.print(f"{r.peer}: {r.verdict}")


def _bps(v: int | None) -> str:
    if not v:
        return "-"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if v >= div:
            return f"{v / div:.1f}{unit}"
    return str(v)
