"""Symbol tables the running kernel publishes in tracefs `print fmt` lines.

`__print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, …)` is how a tracepoint names its enum
values; reading it from the live format gives the names of *this* kernel (drop reasons are
added in almost every release), never a table frozen into netdiag.
"""

from __future__ import annotations

import re

from netdiag.kernel import tracefs
from netdiag.kernel.host import REAL, HostPaths

_PAIR = re.compile(r'\{\s*(-?\w+)\s*,\s*"([^"]*)"\s*\}')


def _symbolic_body(fmt: str, arg: str) -> str | None:
    start = fmt.find(f"__print_symbolic(REC->{arg},")
    if start < 0:
        return None
    depth, i = 0, fmt.index("(", start)
    for j in range(i, len(fmt)):
        if fmt[j] == "(":
            depth += 1
        elif fmt[j] == ")":
            depth -= 1
            if depth == 0:
                return fmt[i + 1 : j]
    return None


def parse_symbolic(fmt: str, arg: str) -> dict[int, str]:
    """{value: name} of the first __print_symbolic over REC->arg; {} when there is none.
    Symbolic (non-numeric) keys such as TCP_ESTABLISHED are skipped."""
    body = _symbolic_body(fmt, arg)
    if body is None:
        return {}
    out: dict[int, str] = {}
    for k, name in _PAIR.findall(body):
        try:
            out[int(k, 0)] = name
        except ValueError:
            continue
    return out


def from_tracefs(spec: str, host: HostPaths = REAL) -> dict[int, str]:
    """`tracefs:CATEGORY:EVENT:ARG` -> {value: name} from the running kernel."""
    _, cat, event, arg = spec.split(":")
    fmt = tracefs.tracepoint_format(cat, event, host)
    return parse_symbolic(fmt, arg) if fmt else {}


def _inline(spec: object) -> dict[int, str]:
    return {int(k): str(v) for k, v in spec.items()} if isinstance(spec, dict) else {}


def resolve_enums(enums: dict[str, object], host: HostPaths = REAL) -> dict[str, dict[int, str]]:
    """Manifest [enums] -> tables: inline tables as given, `tracefs:…` specs read live."""
    out: dict[str, dict[int, str]] = {}
    for name, spec in enums.items():
        if isinstance(spec, str) and spec.startswith("tracefs:"):
            table = from_tracefs(spec, host)
            # socket states all start TCP_: strip it so columns stay narrow
            if table and all(v.startswith("TCP_") for v in table.values()):
                table = {k: v.removeprefix("TCP_") for k, v in table.items()}
            out[name] = table
        elif isinstance(spec, dict) and isinstance(spec.get("tracefs"), str):
            # names from the running kernel plus values the kernel half adds (sentinels)
            extra = spec.get("extra", {})
            out[name] = {**from_tracefs(spec["tracefs"], host), **_inline(extra)}
        elif isinstance(spec, dict):
            out[name] = _inline(spec)
        else:
            out[name] = {}
    return out
