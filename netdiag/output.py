"""The one JSON format of every `--json`: one compact object per line.

One object per line serves both kinds of output with a single rule: a command's single
document (`tune --show --json`) and a stream (`trace-peers --json`, NDJSON) parse the same
way, `lab up --json` can be read with one readline, and `| jq .` pretty-prints either.
Values JSON lacks (paths, enums, datetimes) are written as their str().
"""

from __future__ import annotations

import json
import sys
from typing import IO, Any


def json_line(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, default=str)


def emit_json(obj: Any, file: IO[str] | None = None) -> None:
    """Write `obj` as one JSON line to stdout (or `file`) and flush, so a reader sees it now."""
    out = sys.stdout if file is None else file
    out.write(json_line(obj) + "\n")
    out.flush()
