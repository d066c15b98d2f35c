"""Load recorded lab windows (`netdiag bench diagnose --record DIR`) back into samples."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from netdiag.diagnose import Sample
from netdiag.measure.sockdiag import BbrInfo, SkMem, TcpConn, TcpInfo

HERE = Path(__file__).parent / "fixtures"


def conn_from_dict(d: dict[str, Any]) -> TcpConn:
    d = dict(d)
    d["info"] = TcpInfo(**d["info"]) if d.get("info") else None
    d["bbr"] = BbrInfo(**d["bbr"]) if d.get("bbr") else None
    d["skmem"] = SkMem(**d["skmem"]) if d.get("skmem") else None
    return TcpConn(**d)


def load(path: Path) -> tuple[dict[str, Any], list[Sample]]:
    doc = json.loads(path.read_text())
    samples = [Sample(s["t_s"], conn_from_dict(s["conn"])) for s in doc["samples"]]
    return doc["scenario"], samples


def all_fixtures() -> list[Path]:
    return sorted(HERE.glob("*.json"))
