"""Exporter settings: defaults < TOML config file < command-line flags.

The file is re-read on SIGHUP (flags keep winning), so an operator changes filters without
detaching the probes. Every key is checked: an unknown key or a bad value is one line naming
the file and key, exit 2, and a reload with a bad file keeps the running settings.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netdiag.errors import InputError

DEFAULT_LISTEN = "127.0.0.1:9464"


@dataclass(frozen=True)
class ExporterConfig:
    listen: str = DEFAULT_LISTEN  # HOST:PORT of /metrics, /healthz, /verdicts (port 0 picks one)
    interval_s: float = 5.0  # seconds between probe reads
    ports: tuple[int, ...] = ()  # only sockets with one of these local or remote ports
    pids: tuple[int, ...] = ()  # only sockets these processes hold
    cgroup: str | None = None  # only sockets of this cgroup v2 directory
    netns: str | None = None  # sockets of this named network namespace
    node: str | None = None  # the node's REST API: label series with peer ids
    max_series: int = 256  # label sets per metric; the rest go to one `other` series
    cong: bool = False  # also attach tcp_cong
    no_bpf: bool = False  # poll sock_diag instead of attaching eBPF
    verdicts: bool = True  # run the verdict engine
    verdict_window_s: float = 3.0  # each verdict run watches this long ...
    verdict_interval_s: float = 30.0  # ... this often
    rate: str | None = None  # the path's known bottleneck rate for the verdicts, e.g. 1gbit

    def filters_key(self) -> tuple[Any, ...]:
        """What the probe pipeline is built from: a reload that changes it rebuilds it."""
        return (self.ports, self.pids, self.cgroup, self.netns, self.node, self.cong, self.no_bpf)

    def public(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["ports"], d["pids"] = list(self.ports), list(self.pids)
        return d


FIELDS = {f.name: f for f in dataclasses.fields(ExporterConfig)}


FLAG_NAMES = {
    "ports": "--port",
    "pids": "--pid",
    "interval_s": "--interval",
    "verdict_window_s": "--verdict-window",
    "verdict_interval_s": "--verdict-interval",
}


def flag_name(key: str) -> str:
    return FLAG_NAMES.get(key, "--" + key.replace("_", "-"))


def _where(source: str, key: str) -> str:
    return source if source.startswith("--") else f"{source}: key {key!r}"


def _int_list(v: Any, where: str, lo: int, hi: int) -> tuple[int, ...]:
    items = v if isinstance(v, list | tuple) else [v]
    out = []
    for s in (part.strip() for item in items for part in str(item).split(",")):
        if not s:
            continue
        if not (s.isascii() and s.isdigit()) or not lo <= int(s) <= hi:
            raise InputError(f"{where}: {s!r} is not a number {lo}-{hi}", "e.g. 7600 or [7600]")
        out.append(int(s))
    return tuple(out)


def _convert(key: str, v: Any, source: str) -> Any:
    where = _where(source, key)
    if key == "ports":
        return _int_list(v, where, 1, 65535)
    if key == "pids":
        return _int_list(v, where, 1, 2**22)
    if key in ("cong", "no_bpf", "verdicts"):
        if not isinstance(v, bool):
            raise InputError(f"{where}: {v!r} is not true or false", "write true or false")
        return v
    if key == "max_series":
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 100_000:
            raise InputError(f"{where}: {v!r} is not a number 1-100000", "e.g. max_series = 256")
        return v
    if key in ("interval_s", "verdict_window_s", "verdict_interval_s"):
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v <= 3600:
            raise InputError(f"{where}: {v!r} must be > 0 and ≤ 3600 seconds", "e.g. 5")
        return float(v)
    if not isinstance(v, str):
        raise InputError(f"{where}: {v!r} is not a string", f'e.g. {key} = "..."')
    return v or None


def _check(cfg: ExporterConfig, where: Callable[[str], str]) -> ExporterConfig:
    _host, sep, port = cfg.listen.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or not 0 <= int(port) < 65536:
        raise InputError(
            f"{where('listen')}: {cfg.listen!r} is not HOST:PORT",
            "e.g. 0.0.0.0:9464 (all interfaces) or 127.0.0.1:9464",
        )
    if cfg.node is not None and not cfg.node.startswith(("http://", "https://")):
        raise InputError(
            f"{where('node')}: {cfg.node!r} is not an http(s) URL",
            "e.g. http://127.0.0.1:7601",
        )
    if cfg.verdicts and cfg.verdict_window_s >= cfg.verdict_interval_s:
        raise InputError(
            f"{where('verdict_window_s')}: verdict_window_s {cfg.verdict_window_s:g} must be "
            "shorter than "
            f"verdict_interval_s {cfg.verdict_interval_s:g}",
            "e.g. verdict_window_s = 3, verdict_interval_s = 30",
        )
    if cfg.rate is not None:
        from netdiag.tune.buffers import parse_rate_bps

        try:
            ok = parse_rate_bps(cfg.rate) > 0
        except InputError:
            ok = False
        if not ok:
            raise InputError(f"{where('rate')}: {cfg.rate!r} is not a rate", "e.g. 1gbit")
    return cfg


def read_file(path: Path) -> dict[str, Any]:
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(
            f"config file {path} does not exist", "create it (see docs/deploy.md) or drop --config"
        ) from None
    except OSError as e:
        raise InputError(f"cannot read config file {path}: {e.strerror}", "check its mode") from e
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"config file {path} is not TOML: {e}", "fix the line named") from e
    unknown = sorted(set(doc) - set(FIELDS))
    if unknown:
        raise InputError(
            f"config file {path}: unknown key {unknown[0]!r}",
            f"keys are: {', '.join(FIELDS)}",
        )
    return {k: _convert(k, v, str(path)) for k, v in doc.items()}


def load(path: Path | None, flags: Mapping[str, Any]) -> ExporterConfig:
    """Defaults < file < flags (a flag left unset is None, or an empty tuple when repeatable)."""
    values: dict[str, Any] = {}
    if path is not None:
        values.update(read_file(path))
    from_flags = set()
    for k, v in flags.items():
        if v is None or (isinstance(v, tuple) and not v):
            continue
        values[k] = _convert(k, v, flag_name(k))
        from_flags.add(k)

    def where(key: str) -> str:
        if key in from_flags or path is None:
            return flag_name(key)
        return _where(str(path), key)

    return _check(ExporterConfig(**values), where)


def replace(cfg: ExporterConfig, **changes: Any) -> ExporterConfig:
    return dataclasses.replace(cfg, **changes)
