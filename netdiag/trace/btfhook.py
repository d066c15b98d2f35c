"""Which hook a probe's hot event attaches to: its BTF-enabled raw tracepoint (tp_btf) or the
classic tracepoint, and the -D defines the tp_btf build needs.

A classic tracepoint program runs after the kernel has built the event's perf trace record
(every field of the TP_fast_assign), which costs more than our program itself. tp_btf runs
on the raw tracepoint's arguments (for tcp_probe: struct sock *, struct sk_buff *) with no
record; the program then reads struct fields itself, at byte offsets taken here from the
running kernel's BTF (netdiag/kernel/btf.py), never from headers. A probe opts in with a
`[btf_hook]` table in its manifest (probes/tcp_peers.toml): the event, the define that
selects the tp_btf code, and the offsets it needs as `DEFINE = "struct:member.path:size"`.

The default is the classic tracepoint: side by side on this project's machines tp_btf was
not shown cheaper (docs/benchmarks.md, "tp_btf/tcp_probe"): the program then loads the
tcp_sock fields itself, which the classic hook's record assembly did before it. `tp_btf`
asks for it (an error when unavailable); `auto` uses tp_btf when the kernel's BTF has every
type and member at the size the program reads and the light loader is in use, otherwise the
classic tracepoint, with a one-line reason. A kernel that refuses the tp_btf program at load
(no BPF_TRACE_RAW_TP, a verifier that disagrees) falls back the same way under auto
(engine.Session.open).
Resolved defines are cached per kernel BTF hash (parsing vmlinux BTF takes ~0.2 s).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netdiag.kernel import bpf_compile, btf
from netdiag.kernel.bcc_loader import LoadEnv

HOOKS = ("tracepoint", "tp_btf", "auto")
TP_BTF, TRACEPOINT = "tp_btf", "tracepoint"
DEFAULT = TRACEPOINT


@dataclass(frozen=True)
class BtfHookSpec:
    """A manifest's [btf_hook]: tp_btf/`event` replaces tracepoint `replaces`."""

    event: str
    replaces: str  # "category:event"
    define: str
    offsets: dict[str, str]  # DEFINE -> "struct:member.path:size"
    bitfields: dict[str, str] = field(default_factory=dict)  # NAME -> "struct:path"

    @classmethod
    def from_toml(cls, d: dict[str, Any]) -> BtfHookSpec:
        return cls(
            event=str(d["event"]),
            replaces=str(d["replaces"]),
            define=str(d.get("define", "HOOK_BTF")),
            offsets={str(k): str(v) for k, v in d.get("offsets", {}).items()},
            bitfields={str(k): str(v) for k, v in d.get("bitfields", {}).items()},
        )

    def key(self) -> str:
        text = json.dumps([self.event, self.offsets, self.bitfields], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Facts:
    """What the tp_btf build needs from this kernel: defines and the attach BTF id."""

    defines: dict[str, int]
    btf_id: int


@dataclass(frozen=True)
class Choice:
    hook: str  # TP_BTF or TRACEPOINT
    reason: str  # why not tp_btf ("" when tp_btf, or when the probe has no tp_btf variant)
    defines: dict[str, int] = field(default_factory=dict)
    btf_ids: dict[str, int] = field(default_factory=dict)

    def describe(self, spec: BtfHookSpec | None) -> str:
        """One line for doctor / trace-peers: which hook, and why when it is the fallback."""
        if self.hook == TP_BTF and spec is not None:
            return f"tp_btf/{spec.event} (BTF raw tracepoint)"
        what = f"tracepoint {spec.replaces}" if spec is not None else "tracepoint"
        return f"{what} (classic)" + (f": {self.reason}" if self.reason else "")


def resolve(spec: BtfHookSpec, b: btf.Btf) -> Facts:
    """Offsets of every member the program reads; BtfError names the first one missing."""
    out: dict[str, int] = {}
    for name, where in spec.offsets.items():
        struct_name, path, size = _parse(where)
        f = b.field(struct_name, path)
        if f.bit_size:
            raise btf.BtfError(f"{struct_name}.{path} is a bit field here")
        if size and f.size != size:
            raise btf.BtfError(
                f"{struct_name}.{path} is {f.size} bytes in this kernel, the program reads {size}"
            )
        out[name] = f.offset
    for name, where in spec.bitfields.items():
        struct_name, path, _ = _parse(where)
        f = b.field(struct_name, path)
        if not f.bit_size:
            raise btf.BtfError(f"{struct_name}.{path} is not a bit field in this kernel")
        if f.bit_offset + f.bit_size > 8:
            raise btf.BtfError(f"{struct_name}.{path} spans two bytes in this kernel")
        out.update(
            {f"OFF_{name}": f.offset, f"{name}_SHIFT": f.bit_offset, f"{name}_BITS": f.bit_size}
        )
    return Facts(out, b.find(btf.TYPEDEF, f"btf_trace_{spec.event}"))


def _parse(where: str) -> tuple[str, str, int]:
    parts = where.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise ValueError(f"btf_hook offset {where!r} is not 'struct:member.path[:size]'")
    return parts[0], parts[1], int(parts[2]) if len(parts) == 3 else 0


def cached_facts(spec: BtfHookSpec, cache: Path, vmlinux: Path = btf.VMLINUX) -> Facts:
    """resolve() against the running kernel's BTF, cached under its hash."""
    path = cache / f"{spec.event}-{btf.digest(vmlinux)}-{spec.key()}.json"
    try:
        d = json.loads(path.read_text())
        return Facts({str(k): int(v) for k, v in d["defines"].items()}, int(d["btf_id"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    facts = resolve(spec, btf.load(vmlinux))
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"defines": facts.defines, "btf_id": facts.btf_id}))
    os.replace(tmp, path)
    return facts


def facts_for(spec: BtfHookSpec | None, env: LoadEnv) -> Callable[[], Facts]:
    """choose()'s `facts` for a run in `env`: cached_facts() against the running kernel, cached
    next to the compiled objects (the one definition engine.Session and doctor both use)."""
    cache = bpf_compile.cache_root(env).parent / "btf"

    def facts() -> Facts:
        assert spec is not None  # choose() asks only for a probe with a [btf_hook]
        return cached_facts(spec, cache)

    return facts


def choose(spec: BtfHookSpec | None, want: str, loader: str, facts: Callable[[], Facts]) -> Choice:
    """The hook for this run. `want`: auto | tp_btf | tracepoint. For auto every obstacle is a
    fallback with its reason; for tp_btf the caller turns a fallback into an error."""
    if want not in HOOKS:
        raise ValueError(f"hook {want!r} is not one of {HOOKS}")
    if spec is None:
        return Choice(TRACEPOINT, "this probe has no tp_btf variant" if want == TP_BTF else "")
    if want == TRACEPOINT:
        return Choice(TRACEPOINT, "the default (--hook tp_btf or auto for the BTF raw tracepoint)")
    if loader != "light":
        return Choice(TRACEPOINT, f"the {loader} loader attaches classic tracepoints only")
    try:
        f = facts()
    except FileNotFoundError:
        return Choice(TRACEPOINT, f"no kernel BTF ({btf.VMLINUX} missing)")
    except (btf.BtfError, OSError) as e:
        return Choice(TRACEPOINT, f"kernel BTF: {e}")
    return Choice(TP_BTF, "", {spec.define: 1, **f.defines}, {spec.event: f.btf_id})
