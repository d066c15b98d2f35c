"""Probe manifests (`probes/NAME.toml`): the single source of a probe's hooks, kernel needs,
fields with units and default columns. Doctor, the docs and the engine all read this."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netdiag.errors import InputError
from netdiag.kernel import tracefs
from netdiag.kernel.host import REAL, HostPaths, data_dir
from netdiag.trace.btfhook import BtfHookSpec

PROBES_DIR = data_dir("probes")
FIELD_TYPES = {
    "u16",
    "u32",
    "u64",
    "addr",
    "enum",
    "enum_array",
    "log2_hist",
    "ktime",
    "ksym",
    "str",
}


@dataclass(frozen=True)
class Hook:
    category: str
    event: str
    args: tuple[str, ...]
    why: str
    optional: tuple[str, ...] = ()  # args used when present: -DHAVE_ARG_<EVENT>_<ARG>=1

    def have_define(self, arg: str) -> str:
        return f"HAVE_ARG_{self.event}_{arg}".upper()

    @property
    def tracepoint(self) -> str:
        return f"{self.category}:{self.event}"


@dataclass(frozen=True)
class Field:
    name: str
    c: str  # member of the map value, or `key.MEMBER` for the key
    type: str
    unit: str
    doc: str
    enum: str | None = None
    counter: bool = False
    rate: str | None = None  # name of the per-interval rate column
    rate_scale: float = 8.0  # bytes -> bits by default
    scale: float = 1.0
    missing: int | None = None  # sentinel the kernel half uses for "no sample"
    hidden: bool = False
    byteswap16: bool = False
    running: dict[str, str] | None = None  # enum_array: add the open interval of the current state


@dataclass(frozen=True)
class Output:
    map: str
    stats_map: str
    stats: tuple[str, ...]
    events_stat: str
    lost_stat: str
    default_columns: tuple[str, ...]
    sort: str
    closed_field: str | None = None
    # an array of rows direct-mapped by the key field (tcp_peers' `slots`): read with `map`;
    # entries whose key field is 0 are empty; closed rows are reported once, never deleted
    slots_map: str | None = None
    # per-CPU updates not yet folded into the rows (tcp_peers' `pend`, -DSAMPLE_NS builds
    # only): added at each read, so a row shows every event however the ACKs fell on the CPUs.
    # pending_fold: row field -> "add|min|max:<member of the pending struct>"
    pending_map: str | None = None
    pending_key: str = ""
    pending_fold: tuple[tuple[str, str, str], ...] = ()


def _pending_fold(spec: dict[str, str], where: str) -> tuple[tuple[str, str, str], ...]:
    out = []
    for name, how in spec.items():
        op, _, member = how.partition(":")
        if op not in ("add", "min", "max") or not member:
            raise InputError(
                f"{where}: output.pending_fold.{name} = {how!r} is not 'add|min|max:MEMBER'",
                "see probes/tcp_peers.toml for the schema",
            )
        out.append((name, op, member))
    return tuple(out)


@dataclass(frozen=True)
class Probe:
    name: str
    summary: str
    source: str
    key: str
    doc: str
    needs: tuple[str, ...]
    min_kernel: str
    hooks: tuple[Hook, ...]
    fields: tuple[Field, ...]
    output: Output
    enums: dict[str, Any]
    filter_ports: bool
    filter_cookies: bool
    path: Path = field(compare=False)
    derived: tuple[tuple[str, str, str], ...] = ()  # (name, numerator, denominator)
    ephemeral_ports: bool = False  # -DEPHEMERAL_LO/HI from net.ipv4.ip_local_port_range
    btf_hook: BtfHookSpec | None = None  # [btf_hook]: a tp_btf variant of one hook

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)


def _req(d: dict[str, Any], key: str, where: str) -> Any:
    if key not in d:
        raise InputError(f"{where}: missing `{key}`", "see probes/tcp_peers.toml for the schema")
    return d[key]


def parse(data: dict[str, Any], path: Path) -> Probe:
    where = str(path)
    p = _req(data, "probe", where)
    hooks = []
    for h in _req(data, "hooks", where):
        tp = _req(h, "tracepoint", where)
        if tp.count(":") != 1:
            raise InputError(f"{where}: tracepoint {tp!r} is not CATEGORY:EVENT")
        cat, ev = tp.split(":")
        hooks.append(
            Hook(cat, ev, tuple(h.get("args", ())), h.get("why", ""), tuple(h.get("optional", ())))
        )
    fields = []
    for f in _req(data, "fields", where):
        t = _req(f, "type", where)
        if t not in FIELD_TYPES:
            raise InputError(
                f"{where}: field {f.get('name')} has unknown type {t!r}",
                f"use one of {sorted(FIELD_TYPES)}",
            )
        if t in ("enum", "enum_array") and f.get("enum") not in data.get("enums", {}):
            raise InputError(
                f"{where}: field {f['name']} names enum {f.get('enum')!r} not in [enums]"
            )
        fields.append(
            Field(
                name=_req(f, "name", where),
                c=_req(f, "c", where),
                type=t,
                unit=f.get("unit", ""),
                doc=f.get("doc", ""),
                enum=f.get("enum"),
                counter=bool(f.get("counter", False)),
                rate=f.get("rate"),
                rate_scale=float(f.get("rate_scale", 8.0)),
                scale=float(f.get("scale", 1.0)),
                missing=f.get("missing"),
                hidden=bool(f.get("hidden", False)),
                byteswap16=bool(f.get("byteswap16", False)),
                running=f.get("running"),
            )
        )
    o = _req(data, "output", where)
    out = Output(
        map=_req(o, "map", where),
        stats_map=o.get("stats_map", "stats"),
        stats=tuple(o.get("stats", ())),
        events_stat=o.get("events_stat", ""),
        lost_stat=o.get("lost_stat", ""),
        default_columns=tuple(o.get("default_columns", ())),
        sort=o.get("sort", ""),
        closed_field=o.get("closed_field"),
        slots_map=o.get("slots_map"),
        pending_map=o.get("pending_map"),
        pending_key=o.get("pending_key", ""),
        pending_fold=_pending_fold(o.get("pending_fold", {}), where),
    )
    k = data.get("kernel", {})
    flt = data.get("filters", {})
    return Probe(
        name=_req(p, "name", where),
        summary=p.get("summary", ""),
        source=p.get("source", p["name"]),
        key=p.get("key", ""),
        doc=p.get("doc", ""),
        needs=tuple(k.get("needs", ())),
        min_kernel=str(k.get("min_kernel", "")),
        hooks=tuple(hooks),
        fields=tuple(fields),
        output=out,
        enums=dict(data.get("enums", {})),
        filter_ports=bool(flt.get("ports", False)),
        filter_cookies=bool(flt.get("cookies", False)),
        path=path,
        derived=tuple((d["name"], d["num"], d["den"]) for d in data.get("derived", ())),
        ephemeral_ports=bool(flt.get("ephemeral_ports", False)),
        btf_hook=_btf_hook(data.get("btf_hook"), where),
    )


def _btf_hook(d: dict[str, Any] | None, where: str) -> BtfHookSpec | None:
    if d is None:
        return None
    try:
        return BtfHookSpec.from_toml(d)
    except (KeyError, ValueError) as e:
        raise InputError(f"{where} [btf_hook]: {e}", "see probes/tcp_peers.toml") from None


def load(name: str, probes_dir: Path = PROBES_DIR) -> Probe:
    path = probes_dir / f"{name}.toml"
    if not path.exists():
        known = ", ".join(names(probes_dir)) or "none"
        raise InputError(f"no probe {name!r}", f"known probes: {known} (see `netdiag probes`)")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{path}: {e}", "fix the TOML syntax") from e
    return parse(data, path)


def names(probes_dir: Path = PROBES_DIR) -> list[str]:
    return sorted(p.stem for p in probes_dir.glob("*.toml"))


def catalog(probes_dir: Path = PROBES_DIR) -> list[Probe]:
    return [load(n, probes_dir) for n in names(probes_dir)]


@dataclass(frozen=True)
class Availability:
    ok: bool
    missing: tuple[
        str, ...
    ]  # what is missing, as "tracepoint tcp:tcp_probe" / "arg tcp:tcp_probe.srtt"


def optional_defines(probe: Probe, host: HostPaths = REAL) -> dict[str, int | str]:
    """-D defines for the optional tracepoint args this kernel has (newer kernels add args:
    tcp_retransmit_skb gained `err`; the kernel half uses them only where defined)."""
    out: dict[str, int | str] = {}
    if probe.ephemeral_ports:  # which end of a connection is the service: the other one
        lo, hi = (host.proc / "sys/net/ipv4/ip_local_port_range").read_text().split()[:2]
        out.update({"EPHEMERAL_LO": int(lo), "EPHEMERAL_HI": int(hi)})
    for h in probe.hooks:
        if not h.optional:
            continue
        fmt = tracefs.tracepoint_format(h.category, h.event, host)
        have = tracefs.format_fields(fmt) if fmt else set()
        out.update({h.have_define(a): 1 for a in h.optional if a in have})
    return out


def availability(probe: Probe, host: HostPaths = REAL) -> Availability:
    """Can this probe's hooks attach on the running kernel? (tracefs must be mounted to tell.)"""
    mp = tracefs.mountpoint(host)
    if mp is None:
        return Availability(False, ("tracefs (not mounted; netdiag mounts it when run as root)",))
    if not os.access(mp / "events", os.R_OK | os.X_OK):
        return Availability(False, (f"read access to {mp}/events (run as root to check)",))
    missing: list[str] = []
    for h in probe.hooks:
        fmt = tracefs.tracepoint_format(h.category, h.event, host)
        if fmt is None:
            missing.append(f"tracepoint {h.tracepoint}")
            continue
        have = tracefs.format_fields(fmt)
        missing += [f"arg {h.tracepoint}.{a}" for a in h.args if a not in have]
    return Availability(not missing, tuple(missing))
