"""How commands write to stdout: the one JSON format of every `--json` (one compact object per
line), and the console tables are printed on.

One object per line serves both kinds of output with a single rule: a command's single
document (`tune --show --json`) and a stream (`trace-peers --json`, NDJSON) parse the same
way, `lab up --json` can be read with one readline, and `| jq .` pretty-prints either.
Values JSON lacks (paths, enums, datetimes) are written as their str().
"""

from __future__ import annotations

import json
import sys
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


def json_line(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, default=str)


def emit_json(obj: Any, file: IO[str] | None = None) -> None:
    """Write `obj` as one JSON line to stdout (or `file`) and flush, so a reader sees it now."""
    out = sys.stdout if file is None else file
    out.write(json_line(obj) + "\n")
    out.flush()


def console() -> Console:
    """Sized by the terminal when there is one; otherwise the 100 columns we design for (not
    rich's 80, which wraps wide tables in a pipe or file)."""
    from rich.console import Console  # not at import: JSON-only callers stay light

    c = Console()
    return c if c.is_terminal else Console(width=100)
