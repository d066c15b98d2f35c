"""Named tuning profiles: data files netdiag/tune/profiles/NAME.toml, each value with a reason."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netdiag.errors import InputError

DIR = Path(__file__).parent / "profiles"


@dataclass(frozen=True)
class Setting:
    value: str
    reason: str


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    cc: Setting | None = None
    buffers_rtt: str | None = None
    buffers_rate: str | None = None
    buffers_reason: str = ""
    sysctls: dict[str, Setting] = field(default_factory=dict)


def names() -> list[str]:
    return sorted(p.stem for p in DIR.glob("*.toml"))


def parse(name: str, data: dict[str, Any]) -> Profile:
    try:
        cc = data.get("cc")
        buf = data.get("buffers", {})
        return Profile(
            name=name,
            description=str(data["description"]),
            cc=Setting(str(cc["name"]), str(cc["reason"])) if cc else None,
            buffers_rtt=buf.get("rtt"),
            buffers_rate=buf.get("rate"),
            buffers_reason=str(buf.get("reason", "")),
            sysctls={
                k: Setting(str(v["value"]), str(v["reason"]))
                for k, v in data.get("sysctl", {}).items()
            },
        )
    except (KeyError, TypeError) as e:
        raise InputError(
            f"profile {name} is malformed: missing {e}",
            "every value needs `value` and `reason`; see docs/tune.md",
        ) from e


def load(name: str) -> Profile:
    p = DIR / f"{name}.toml"
    if not p.exists():
        raise InputError(f"no tune profile {name!r}", f"choose one of: {', '.join(names())}")
    return parse(name, tomllib.loads(p.read_text()))
