"""Lab topologies: TOML file -> validated, typed Topology (or built in code with `two_node`).

File format (docs/lab.md has the full reference)::

    name = "wan"                 # optional; default: the file's stem
    engine = "auto"              # auto | userspace | kernel
    seed = 1                     # loss/jitter PRNG seed

    [defaults]                   # applied to every link unless the link overrides
    delay = "50ms"

    [[nodes]]
    name = "a"
    addresses = ["10.0.0.1/32"]  # optional; default 10.0.<i/250>.<i%250+1>/32 on lo
    command = "iperf3 -s"        # optional, supervised; or role = "node"

    [[links]]
    a = "a"
    b = "b"
    delay = "50ms"   # round-trip delay the link adds (half each way)
    jitter = "1ms"   # +- uniform per direction, never reorders
    rate = "100mbit" # serialization rate per direction; 0 = unlimited
    loss = "1%"      # per direction, independent
    queue = "1bdp"   # bottleneck queue: packets, or multiples of rate x delay
    kind = "veth"    # optional: a plain kernel veth pair (rate/queue by TBF; delay needs netem)

Schema errors name the key path (``links[1].rate``) and the line it is on.
"""

from __future__ import annotations

import ipaddress
import math
import re
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from netdiag.errors import InputError
from netdiag.lab import units

ENGINES = ("auto", "userspace", "kernel")
ROLES = ("node",)
# emulated: the lab's engine carries the link (forwarder or netem); veth: a plain veth pair
LINK_KINDS = ("emulated", "veth")
LAB_NAME = re.compile(r"^[a-z0-9][a-z0-9_]{0,15}$")
NODE_NAME = re.compile(r"^[a-z0-9][a-z0-9_]{0,10}$")  # ndl-<peer> must fit IFNAMSIZ (15)
DEFAULT_MTU = 1500


@dataclass(frozen=True)
class LinkShape:
    """What one link does to packets. delay_s is the round-trip delay it adds (half each way)."""

    delay_s: float = 0.0
    jitter_s: float = 0.0
    rate_bps: int = 0
    loss: float = 0.0
    queue_pkts: int = 0  # 0: use queue_bdp
    queue_bdp: float = 1.0

    def queue_packets(self, mtu: int = DEFAULT_MTU) -> int:
        """Bottleneck queue limit in packets (BDP multiples resolved; at least 8)."""
        if self.queue_pkts:
            return self.queue_pkts
        if not self.rate_bps:
            return 10_000
        bdp_bytes = self.rate_bps / 8 * max(self.delay_s, 1e-3)
        return max(8, math.ceil(self.queue_bdp * bdp_bytes / mtu))

    def with_changes(self, **kw: Any) -> LinkShape:
        return replace(self, **{k: v for k, v in kw.items() if v is not None})

    def describe(self) -> str:
        parts = [f"delay {units.fmt_duration(self.delay_s)}"]
        if self.jitter_s:
            parts.append(f"jitter {units.fmt_duration(self.jitter_s)}")
        parts.append(f"rate {units.fmt_rate(self.rate_bps)}")
        parts.append(f"loss {self.loss * 100:g}%")  # "loss 0%" too: `link set --loss 0` echoes it
        return ", ".join(parts)

    def as_dict(self, mtu: int = DEFAULT_MTU) -> dict[str, Any]:
        return {
            "delay_us": round(self.delay_s * 1e6, 3),
            "jitter_us": round(self.jitter_s * 1e6, 3),
            "rate_bps": self.rate_bps,
            "loss": self.loss,
            "queue_pkts": self.queue_packets(mtu),
            "queue_bdp": 0.0 if self.queue_pkts else self.queue_bdp,  # 0: fixed packet count
        }


@dataclass(frozen=True)
class NodeSpec:
    name: str
    addresses: tuple[str, ...]  # CIDRs on lo; the first one is the node's address
    command: tuple[str, ...] | str | None = None  # argv list, or a shell string
    role: str | None = None
    env: tuple[tuple[str, str], ...] = ()

    @property
    def address(self) -> str:
        return self.addresses[0].split("/")[0]


@dataclass(frozen=True)
class LinkSpec:
    a: str
    b: str
    shape: LinkShape
    kind: str = "emulated"


@dataclass(frozen=True)
class Topology:
    name: str
    nodes: tuple[NodeSpec, ...]
    links: tuple[LinkSpec, ...]
    engine: str = "auto"
    seed: int = 1
    mtu: int = DEFAULT_MTU
    source: str | None = None  # the file it came from, if any

    def node(self, name: str) -> NodeSpec:
        for n in self.nodes:
            if n.name == name:
                return n
        raise InputError(f"lab {self.name} has no node {name!r}", f"nodes: {self.node_names()}")

    def node_names(self) -> str:
        return ", ".join(n.name for n in self.nodes)

    def link(self, a: str, b: str) -> tuple[int, LinkSpec]:
        for i, ln in enumerate(self.links):
            if {ln.a, ln.b} == {a, b}:
                return i, ln
        raise InputError(f"lab {self.name} has no link {a} <-> {b}", "see `netdiag lab status`")


def default_address(index: int) -> str:
    return f"10.0.{index // 250}.{index % 250 + 1}/32"


def two_node(
    delay_s: float,
    rate_bps: int,
    loss: float = 0.0,
    *,
    jitter_s: float = 0.0,
    queue: int | str = "1bdp",
    name: str | None = None,
    engine: str = "auto",
    seed: int = 1,
    nodes: tuple[str, str] = ("a", "b"),
) -> Topology:
    """Two nodes joined by one link — the common case for benchmarks and tests.

    delay_s is the round-trip delay the link adds; a ping from a to b sees ~delay_s.
    """
    import secrets

    qp, qb = units.queue_spec(queue)
    shape = LinkShape(delay_s, jitter_s, int(rate_bps), float(loss), qp, qb or 1.0)
    topo = Topology(
        name=name or f"t{secrets.token_hex(3)}",
        nodes=tuple(NodeSpec(n, (default_address(i),)) for i, n in enumerate(nodes)),
        links=(LinkSpec(nodes[0], nodes[1], shape),),
        engine=engine,
        seed=seed,
    )
    validate(topo)
    return topo


def load(path: str | Path, name: str | None = None) -> Topology:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise InputError(f"cannot read topology {p}: {e.strerror}", "check the path") from e
    return parse(text, source=str(p), default_name=name or p.stem.replace("-", "_"))


def parse(text: str, source: str = "<topology>", default_name: str = "lab") -> Topology:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        # tomllib's message already carries "(at line L, column C)"
        raise InputError(
            f"{source}: TOML syntax error: {e}", "fix the TOML at that position"
        ) from e
    return _Builder(doc, text, source, default_name).build()


def validate(topo: Topology) -> None:
    if not LAB_NAME.match(topo.name):
        raise InputError(
            f"lab name {topo.name!r} is not valid",
            "use 1-16 lowercase letters, digits or '_', starting with a letter or digit",
        )
    if topo.engine not in ENGINES:
        raise InputError(f"engine {topo.engine!r} is unknown", f"use one of {', '.join(ENGINES)}")
    for ln in topo.links:
        if ln.kind not in LINK_KINDS:
            raise InputError(
                f"link {ln.a} <-> {ln.b}: kind {ln.kind!r} is unknown",
                f"use {' or '.join(LINK_KINDS)}",
            )


class _Builder:
    def __init__(self, doc: dict[str, Any], text: str, source: str, default_name: str) -> None:
        self.doc, self.lines, self.source, self.default_name = (
            doc,
            text.splitlines(),
            source,
            default_name,
        )

    # -- error positions -------------------------------------------------------------------
    def _line_of(self, path: tuple[str | int, ...]) -> int | None:
        """1-based line of a key path like ("links", 2, "rate"); None when it is not written."""
        start, end = 0, len(self.lines)
        rest = list(path)
        if len(rest) >= 2 and isinstance(rest[1], int):
            table, idx = str(rest[0]), rest[1]
            hdr = re.compile(rf"^\s*\[\[\s*{re.escape(table)}\s*\]\]")
            seen = -1
            for i, line in enumerate(self.lines):
                if hdr.match(line):
                    seen += 1
                    if seen == idx:
                        start = i
                        break
            else:
                return None
            rest = rest[2:]
            if not rest:
                return start + 1
        elif len(rest) >= 2:
            hdr = re.compile(rf"^\s*\[\s*{re.escape(str(rest[0]))}\s*\]")
            for i, line in enumerate(self.lines):
                if hdr.match(line):
                    start = i
                    break
            rest = rest[1:]
        else:
            end = next((i for i, ln in enumerate(self.lines) if ln.lstrip().startswith("[")), end)
        key = re.compile(rf"^\s*{re.escape(str(rest[0]))}\s*=")
        for i in range(start, end):
            if i > start and self.lines[i].lstrip().startswith("["):
                break
            if key.match(self.lines[i]):
                return i + 1
        return start + 1 if start else None

    def err(self, path: tuple[str | int, ...], what: str, fix: str) -> InputError:
        dotted = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
        line = self._line_of(path)
        where = f"{self.source}:{line}" if line else self.source
        return InputError(f"{where}: {dotted}: {what}", fix)

    def _unit(self, fn: Any, value: Any, path: tuple[str | int, ...]) -> Any:
        try:
            return fn(value)
        except InputError as e:
            raise self.err(path, e.what.split(": ", 1)[-1], e.fix or "") from None

    # -- building --------------------------------------------------------------------------
    def build(self) -> Topology:
        d = self.doc
        known = {"name", "engine", "seed", "mtu", "defaults", "nodes", "links"}
        for k in d:
            if k not in known:
                raise self.err((k,), "unknown key", f"known keys: {', '.join(sorted(known))}")
        name = d.get("name", self.default_name)
        if not isinstance(name, str) or not LAB_NAME.match(name):
            raise self.err(("name",), f"{name!r} is not a valid lab name", "use 1-16 of [a-z0-9_]")
        engine = d.get("engine", "auto")
        if engine not in ENGINES:
            raise self.err(
                ("engine",), f"{engine!r} is unknown", f"use one of {', '.join(ENGINES)}"
            )
        seed = d.get("seed", 1)
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise self.err(("seed",), f"{seed!r} is not a non-negative integer", "e.g. seed = 1")
        mtu = d.get("mtu", DEFAULT_MTU)
        if not isinstance(mtu, int) or not 576 <= mtu <= 2000:
            raise self.err(("mtu",), f"{mtu!r} is out of range", "use 576 to 2000")
        defaults = d.get("defaults", {})
        if not isinstance(defaults, dict):
            raise self.err(("defaults",), "must be a table", "write [defaults]")
        self._check_link_keys(defaults, ("defaults",), allow_ends=False)
        nodes = self._nodes(d.get("nodes"))
        links = self._links(d.get("links", []), defaults, {n.name for n in nodes})
        return Topology(name, nodes, links, engine, seed, mtu, self.source)

    def _nodes(self, raw: Any) -> tuple[NodeSpec, ...]:
        if not isinstance(raw, list) or not raw:
            raise self.err(
                ("nodes",), "a lab needs at least one [[nodes]] entry", 'add [[nodes]] name = "a"'
            )
        out: list[NodeSpec] = []
        seen: set[str] = set()
        known = {"name", "addresses", "command", "role", "env"}
        for i, n in enumerate(raw):
            for k in n:
                if k not in known:
                    raise self.err(
                        ("nodes", i, k), "unknown key", f"known: {', '.join(sorted(known))}"
                    )
            name = n.get("name")
            if not isinstance(name, str) or not NODE_NAME.match(name):
                raise self.err(
                    ("nodes", i, "name"),
                    f"{name!r} is not a valid node name",
                    "use 1-11 of [a-z0-9_] (interface names derive from it and must fit 15 chars)",
                )
            if name in seen:
                raise self.err(
                    ("nodes", i, "name"), f"duplicate node {name!r}", "node names must be unique"
                )
            seen.add(name)
            addrs = n.get("addresses", [default_address(i)])
            if not isinstance(addrs, list) or not addrs:
                raise self.err(
                    ("nodes", i, "addresses"), "must be a non-empty list", 'e.g. ["10.0.0.1/32"]'
                )
            for a in addrs:
                try:
                    iface = ipaddress.ip_interface(a)
                except (ValueError, TypeError):
                    raise self.err(
                        ("nodes", i, "addresses"), f"{a!r} is not an address", 'e.g. "10.0.0.1/32"'
                    ) from None
                if iface.version != 4:  # routes and link addressing are IPv4 only for now
                    raise self.err(
                        ("nodes", i, "addresses"), f"{a!r} is not IPv4", 'e.g. "10.0.0.1/32"'
                    )
            cmd = n.get("command")
            role = n.get("role")
            if cmd is not None and not (
                isinstance(cmd, str)
                or (isinstance(cmd, list) and all(isinstance(c, str) for c in cmd))
            ):
                raise self.err(
                    ("nodes", i, "command"),
                    "must be a string or a list of strings",
                    'e.g. "iperf3 -s"',
                )
            if role is not None and role not in ROLES:
                raise self.err(
                    ("nodes", i, "role"), f"{role!r} is unknown", f"use one of {', '.join(ROLES)}"
                )
            if role and cmd:
                raise self.err(
                    ("nodes", i, "role"), "a node has either a role or a command", "drop one"
                )
            env = n.get("env", {})
            if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
                raise self.err(
                    ("nodes", i, "env"), "must be a table of strings", 'e.g. env = { A = "1" }'
                )
            out.append(
                NodeSpec(
                    name,
                    tuple(str(a) if "/" in str(a) else f"{a}/32" for a in addrs),
                    tuple(cmd) if isinstance(cmd, list) else cmd,
                    role,
                    tuple(sorted(env.items())),
                )
            )
        return tuple(out)

    def _check_link_keys(
        self, t: dict[str, Any], path: tuple[str | int, ...], allow_ends: bool
    ) -> None:
        known = {"delay", "jitter", "rate", "loss", "queue", "kind"} | (
            {"a", "b"} if allow_ends else set()
        )
        for k in t:
            if k not in known:
                raise self.err((*path, k), "unknown key", f"known: {', '.join(sorted(known))}")

    def _links(self, raw: Any, defaults: dict[str, Any], names: set[str]) -> tuple[LinkSpec, ...]:
        if not isinstance(raw, list):
            raise self.err(("links",), "must be an array of tables", "write [[links]] entries")
        out: list[LinkSpec] = []
        pairs: set[frozenset[str]] = set()
        for i, ln in enumerate(raw):
            path: tuple[str | int, ...] = ("links", i)
            self._check_link_keys(ln, path, allow_ends=True)
            for end in ("a", "b"):
                if ln.get(end) not in names:
                    raise self.err(
                        (*path, end),
                        f"{ln.get(end)!r} is not a node",
                        f"nodes: {', '.join(sorted(names))}",
                    )
            if ln["a"] == ln["b"]:
                raise self.err((*path, "b"), "a link joins two different nodes", "fix a or b")
            pair = frozenset((ln["a"], ln["b"]))
            if pair in pairs:
                raise self.err(
                    path, f"second link between {ln['a']} and {ln['b']}", "one link per pair"
                )
            pairs.add(pair)
            merged = {**defaults, **ln}

            def src(
                k: str, ln: dict[str, Any] = ln, path: tuple[str | int, ...] = path
            ) -> tuple[str | int, ...]:
                return (*path, k) if k in ln else ("defaults", k)

            qp, qb = (0, 1.0)
            if "queue" in merged:
                qp, qb = self._unit(units.queue_spec, merged["queue"], src("queue"))
            shape = LinkShape(
                delay_s=self._unit(units.duration_s, merged.get("delay", 0), src("delay")),
                jitter_s=self._unit(units.duration_s, merged.get("jitter", 0), src("jitter")),
                rate_bps=self._unit(units.rate_bps, merged.get("rate", 0), src("rate")),
                loss=self._unit(units.loss_fraction, merged.get("loss", 0), src("loss")),
                queue_pkts=qp,
                queue_bdp=qb or 1.0,
            )
            kind = merged.get("kind", "emulated")
            if kind not in LINK_KINDS:
                raise self.err(
                    src("kind"), f"{kind!r} is not a link kind", f"use {' or '.join(LINK_KINDS)}"
                )
            out.append(LinkSpec(ln["a"], ln["b"], shape, kind))
        return tuple(out)


def routes(topo: Topology) -> dict[str, dict[str, str]]:
    """node -> {destination node -> neighbour to send through} by fewest hops (BFS)."""
    adj: dict[str, list[str]] = {n.name: [] for n in topo.nodes}
    for ln in topo.links:
        adj[ln.a].append(ln.b)
        adj[ln.b].append(ln.a)
    table: dict[str, dict[str, str]] = {}
    for src in adj:
        first: dict[str, str] = {}
        frontier = [(nb, nb) for nb in adj[src]]
        seen = {src}
        while frontier:
            nxt: list[tuple[str, str]] = []
            for node, via in frontier:
                if node in seen:
                    continue
                seen.add(node)
                first[node] = via
                nxt.extend((m, via) for m in adj[node] if m not in seen)
            frontier = nxt
        table[src] = first
    return table


__all__ = ["LinkShape", "LinkSpec", "NodeSpec", "Topology", "load", "parse", "routes", "two_node"]
