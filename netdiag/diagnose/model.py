"""The verdict engine's vocabulary: verdicts, severities, findings.

A finding is a claim an operator acts on, so it carries the evidence that decided it (numbers
with their units in the key names) and the fix. JSON shape (one per finding)::

    {"scope": "connection", "subject": "10.0.0.2:5201 (local :41234)", "verdict": "rwnd-limited",
     "severity": "warn", "confidence": 0.9, "evidence": {"rwnd_limited_pct": 63.0, ...},
     "summary": "...", "fix": "..."}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

Verdict = Literal[
    "idle",
    "app-limited",
    "sndbuf-limited",
    "rwnd-limited",
    "cwnd-limited",
    "loss-limited",
    "rtt-inflated",
    "receiver-slow",
    "accept-queue-overflow",
    "path-limited",
]
VERDICTS: tuple[Verdict, ...] = get_args(Verdict)  # in the order above
# verdicts that name a real limit: reporting one of these as path-limited is the worst mistake
REAL_LIMITS: frozenset[str] = frozenset(VERDICTS) - {"idle", "app-limited", "path-limited"}

Severity = Literal["info", "warn", "error"]
SEVERITY_RANK: dict[str, int] = {"info": 0, "warn": 1, "error": 2}

Scope = Literal["connection", "listener", "host", "node"]

Evidence = dict[str, int | float | str | bool | None]


@dataclass(frozen=True)
class Finding:
    scope: Scope
    subject: str
    verdict: Verdict
    severity: Severity
    confidence: float  # 0..1: how sure the engine is of the verdict, not of the fix
    evidence: Evidence
    summary: str  # one line an operator reads: the verdict with its deciding numbers
    fix: str | None
    sock_cookie: int | None = None
    labels: dict[str, Any] = field(default_factory=dict)  # e.g. the node's peer_id, mesh

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "scope": self.scope,
            "subject": self.subject,
            "verdict": self.verdict,
            "severity": self.severity,
            "confidence": round(self.confidence, 2),
            "evidence": dict(self.evidence),
            "summary": self.summary,
            "fix": self.fix,
        }
        if self.sock_cookie is not None:
            out["sock_cookie"] = self.sock_cookie
        if self.labels:
            out["labels"] = dict(self.labels)
        return out


def sort_key(f: Finding) -> tuple[int, float, str]:
    """Most severe first, then most confident, then by subject (stable output)."""
    return (-SEVERITY_RANK[f.severity], -f.confidence, f.subject)


def worst(findings: list[Finding]) -> Severity | None:
    if not findings:
        return None
    top = max(findings, key=lambda f: SEVERITY_RANK[f.severity])
    return top.severity


def human_bytes(n: float) -> str:
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n:.0f} B"


def human_bps(v: float | None) -> str:
    if not v:
        return "-"
    for unit, div in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if v >= div:
            return f"{v / div:.1f} {unit}"
    return f"{v:.0f} bit/s"
