"""`netdiag exporter`: the probes and the verdict engine as a daemon serving /metrics,
/healthz and /verdicts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from netdiag.exporter.config import DEFAULT_LISTEN


@click.command("exporter")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML file with the keys below (re-read on SIGHUP; flags win over it).",
)
@click.option("--listen", help=f"HOST:PORT to serve on (default {DEFAULT_LISTEN}; port 0 picks).")
@click.option("--interval", "interval_s", type=float, help="Seconds between probe reads (5).")
@click.option("--port", "ports", multiple=True, help="Only sockets with this local or remote port.")
@click.option("--pid", "pids", multiple=True, help="Only sockets this process holds.")
@click.option("--cgroup", help="Only sockets of this cgroup v2 directory (and its children).")
@click.option("--netns", help="Sockets of this named network namespace.")
@click.option("--node", help="The node's REST API URL: series and verdicts get peer ids.")
@click.option(
    "--max-series", type=int, help="Label sets per metric before the `other` series (256)."
)
@click.option("--cong/--no-cong", default=None, help="Also attach tcp_cong.")
@click.option("--no-bpf", is_flag=True, default=None, help="Poll sock_diag instead of eBPF.")
@click.option("--verdicts/--no-verdicts", default=None, help="Run the verdict engine (on).")
@click.option("--verdict-window", "verdict_window_s", type=float, help="Seconds watched (3).")
@click.option("--verdict-interval", "verdict_interval_s", type=float, help="Seconds apart (30).")
@click.option("--rate", help="The path's known bottleneck rate for verdicts, e.g. 1gbit.")
def exporter(config_path: Path | None, **flags: Any) -> int:
    """Serve per-peer TCP metrics (/metrics), verdicts (/verdicts) and health (/healthz).

    Runs until SIGTERM or Ctrl-C (probes detached, exit 0 / 130); SIGHUP re-reads --config.
    Series are labelled per peer address, peer id and local listening port — never per
    socket — and capped at --max-series label sets plus one `other`.
    """
    from netdiag.exporter import config
    from netdiag.exporter.daemon import Exporter

    if flags.get("no_bpf") is False:
        flags["no_bpf"] = None
    cfg = config.load(config_path, flags)
    ex = Exporter(cfg, config_path, flags)

    def ready(addr: str) -> None:
        click.echo(
            f"netdiag exporter: serving http://{addr}/metrics /healthz /verdicts "
            f"(source {ex.source}, every {cfg.interval_s:g} s, max {cfg.max_series} series)",
            err=True,
        )

    return ex.run(ready)
