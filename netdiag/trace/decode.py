"""Map entries -> typed rows (dicts whose keys carry units), driven by the manifest's fields.

Pure functions over plain objects with attributes (bcc's ctypes keys/leaves in production,
SimpleNamespace or ctypes structs in unit tests).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from netdiag.trace.manifest import Field, Probe

Row = dict[str, Any]
AF_INET = 2


def _get(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _scalar(v: Any) -> int:
    return int(getattr(v, "value", v))


def addr_text(raw: Sequence[int], family: int) -> str:
    b = bytes(raw)
    if family == AF_INET:
        return str(ipaddress.IPv4Address(b[:4]))
    a6 = ipaddress.IPv6Address(b[:16])
    # dual-stack sockets talking IPv4 show as ::ffff:a.b.c.d; print them as IPv4, like ss does
    return str(a6.ipv4_mapped) if a6.ipv4_mapped else str(a6)


def hist_percentile(buckets: Sequence[int], q: float) -> float | None:
    """q-quantile of a bcc log2 histogram, interpolated linearly inside the bucket.

    bcc's bpf_log2l(v) is floor(log2 v) + 1, so bucket 0 holds 0 and bucket k >= 1 holds
    [2^(k-1), 2^k)."""
    total = sum(buckets)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for k, n in enumerate(buckets):
        if n and seen + n >= rank:
            lo = 0 if k == 0 else 2 ** (k - 1)
            hi = 1 if k == 0 else 2**k
            return lo + (hi - lo) * (rank - seen) / n
        seen += n
    return float(2 ** (len(buckets) - 1))


def hist_base(f: Field) -> str:
    return f.name.removesuffix("_hist")


def peer_label(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


@dataclass(frozen=True)
class Decoder:
    probe: Probe
    enums: dict[str, dict[int, str]]
    ksym: Callable[[int], str] = lambda a: hex(a)

    def enum_name(self, enum: str | None, v: int) -> str:
        return self.enums.get(enum or "", {}).get(v, str(v))

    def row(self, key: Any, leaf: Any, now_ns: int) -> Row:
        src = {"key": key}
        raw: dict[str, Any] = {}
        for f in self.probe.fields:
            if f.c.startswith("key."):
                rest = f.c.removeprefix("key.")
                raw[f.name] = _get(src["key"], rest)
            else:
                raw[f.name] = _get(leaf, f.c)
        row: Row = {}
        family = _scalar(raw["family"]) if "family" in raw else AF_INET
        cfields = {f.c: raw[f.name] for f in self.probe.fields}
        for f in self.probe.fields:
            v = raw[f.name]
            if f.type == "addr":
                row[f.name] = addr_text(v, family)
            elif f.type == "enum":
                n = _scalar(v)
                if f.byteswap16:
                    n = int.from_bytes(n.to_bytes(2, "little"), "big")
                row[f.name] = self.enum_name(f.enum, n)
            elif f.type == "enum_array":
                vals = [int(x) for x in v]
                if f.running:
                    cur = _scalar(cfields[f.running["state"]])
                    since = _scalar(cfields[f.running["since"]])
                    until = _scalar(cfields.get(f.running.get("until", ""), 0)) or now_ns
                    if 0 <= cur < len(vals) and since and until > since:
                        vals[cur] += until - since
                row[f.name] = {
                    self.enum_name(f.enum, i): (x * f.scale if f.scale != 1.0 else x)
                    for i, x in enumerate(vals)
                }
            elif f.type == "log2_hist":
                buckets = [int(x) for x in v]
                row[f.name] = buckets
                base = hist_base(f)
                for q, tag in ((0.5, "p50"), (0.9, "p90"), (0.99, "p99")):
                    p = hist_percentile(buckets, q)
                    row[f"{base}_{tag}_{f.unit}"] = round(p) if p is not None else None
            elif f.type == "str":  # a char array (comm): up to the first NUL
                b = v if isinstance(v, bytes) else bytes(v)
                row[f.name] = b.split(b"\0", 1)[0].decode(errors="replace") or None
            elif f.type == "ksym":
                row[f.name] = self.ksym(_scalar(v))
            else:
                n = _scalar(v)
                if f.missing is not None and n == f.missing:
                    row[f.name] = None
                else:
                    row[f.name] = n * f.scale if f.scale != 1.0 else n
        for f in self.probe.fields:  # interpolation inside a log2 bucket can overshoot
            if f.type != "log2_hist":
                continue
            base = hist_base(f)
            lo, hi = row.get(f"{base}_min_{f.unit}"), row.get(f"{base}_max_{f.unit}")
            for tag in ("p50", "p90", "p99"):
                k = f"{base}_{tag}_{f.unit}"
                if row.get(k) is not None and hi is not None and lo is not None:
                    row[k] = min(max(row[k], lo), hi)
        for name, num, den in self.probe.derived:
            d = row.get(den)
            row[name] = round(row[num] / d) if d else None
        if "raddr" in row and "rport" in row:
            row["peer"] = peer_label(row["raddr"], row["rport"])
        start = row.get("open_ns") or row.get("first_ns")
        if start:
            end = row.get("closed_ns") or now_ns
            row["age_s"] = round(max(0, end - start) / 1e9, 3)
        return row

    def key_of(self, row: Row) -> Any:
        """Identity of a row across intervals (for rates)."""
        k = self.probe.key
        if k in row:
            return row[k]
        return tuple(row.get(p) for p in k.split("+"))


def apply_rates(
    probe: Probe,
    rows: list[Row],
    prev: dict[Any, Row],
    dt_s: float,
    key_of: Callable[[Row], Any],
    counted_from_zero: bool = True,
) -> None:
    """Fill each counter field's per-interval rate column (delta / dt × rate_scale).

    `counted_from_zero`: a row's counters started at 0 when its source first saw it (the eBPF
    maps), so a new row's whole count belongs to this interval. When they are lifetime
    counters (tcp_info), a new row has no rate until a second sample exists."""
    for r in rows:
        before = prev.get(key_of(r))
        for f in probe.fields:
            if not (f.counter and f.rate):
                continue
            if before is None and not counted_from_zero:
                r[f.rate] = None
                continue
            cur = r.get(f.name) or 0
            old = (before or {}).get(f.name) or 0
            delta = cur - old if cur >= old else cur
            r[f.rate] = round(delta / dt_s * f.rate_scale, 1) if dt_s > 0 else None
