"""Label rows with the reference node's view of its peers, joined by socket cookie.

The node serves `GET /peers` as a JSON list (or {"peers": [...]}) of objects with at least
`socket_cookie`, and `peer_id` (or `id`), `address`, `direction`, `mesh`, `score`.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from netdiag.errors import InputError, NetdiagError
from netdiag.kernel import netns
from netdiag.trace.decode import Row

LABELS = ("peer_id", "direction", "mesh", "score", "node_address")


def fetch_peers(
    url: str,
    timeout_s: float = 2.0,
    netns_name: str | None = None,
) -> list[dict[str, Any]]:
    """GET URL/peers; with `netns_name`, from inside that namespace (a lab node's API
    listens on an address that exists only there)."""
    return netns.run_in(netns_name, lambda: _fetch(url, timeout_s))


def _fetch(url: str, timeout_s: float) -> list[dict[str, Any]]:
    if not url.startswith(("http://", "https://")):
        raise InputError(
            f"--node {url!r} is not an http(s) URL", "e.g. --node http://127.0.0.1:8080"
        )
    target = url.rstrip("/") + "/peers"
    try:
        with urllib.request.urlopen(target, timeout=timeout_s) as resp:
            data = json.loads(resp.read())
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        raise NetdiagError(
            f"cannot fetch {target}: {e}", "is the node running? check --node URL"
        ) from e
    except json.JSONDecodeError as e:
        raise NetdiagError(
            f"{target} did not return JSON: {e}", "point --node at the node's REST API"
        ) from e
    peers = data.get("peers", []) if isinstance(data, dict) else data
    if not isinstance(peers, list):
        raise NetdiagError(f"{target}: expected a list of peers", "check the node version")
    return [p for p in peers if isinstance(p, dict)]


def by_cookie(peers: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for p in peers:
        c = p.get("socket_cookie")
        if c is None:
            continue
        try:
            out[int(c)] = p
        except (TypeError, ValueError):
            continue
    return out


def label(rows: list[Row], peers: dict[int, dict[str, Any]]) -> int:
    """Add the node's labels to rows whose cookie the node knows; returns how many matched."""
    n = 0
    for r in rows:
        p = peers.get(int(r.get("sock_cookie") or 0))
        if p is None:
            continue
        n += 1
        r["peer_id"] = p.get("peer_id", p.get("id"))
        r["direction"] = p.get("direction")
        r["mesh"] = p.get("mesh")
        r["score"] = p.get("score")
        r["node_address"] = p.get("address")
    return n
