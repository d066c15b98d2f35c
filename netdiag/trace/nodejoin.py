"""Label rows with the reference node's view of its peers, joined by socket cookie.

The node serves `GET /peers` (netdiag.nodeapi reads it: a JSON list, or {"peers": [...]}, of
objects with the cookie, and `peer_id` (or `id`), `address`, `direction`, `mesh`, `score`).
The join key is `sock_cookie`, the name tcp:tcp_probe and the trace rows use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from netdiag.errors import InputError, NetdiagError
from netdiag.trace.decode import Row

if TYPE_CHECKING:  # nodeapi (http.client, msgspec) is imported only when --node is given
    from netdiag.nodeapi import Peer

LABELS = ("peer_id", "direction", "mesh", "score", "node_address")


def fetch_peers(url: str, timeout_s: float = 2.0, netns_name: str | None = None) -> list[Peer]:
    """GET URL/peers; with `netns_name`, from inside that namespace (a lab node's API
    listens on an address that exists only there)."""
    from netdiag.nodeapi import NodeApi, NodeUnavailable

    if not url.startswith(("http://", "https://")):
        raise InputError(
            f"--node {url!r} is not an http(s) URL", "e.g. --node http://127.0.0.1:8080"
        )
    try:
        api = NodeApi.at(url, netns_name, timeout_s)
    except ValueError as e:
        raise InputError(f"--node {e}", "e.g. --node http://127.0.0.1:7601") from None
    target = f"{api.url}/peers"
    with api:
        try:
            return api.peers()
        except NodeUnavailable as e:
            if "did not return JSON" in str(e):
                raise NetdiagError(str(e), "point --node at the node's REST API") from e
            raise NetdiagError(
                f"cannot fetch {target}: {e}", "is the node running? check --node URL"
            ) from e


def by_sock_cookie(peers: list[Peer]) -> dict[int, Peer]:
    from netdiag.nodeapi import peers_by_sock_cookie

    return peers_by_sock_cookie(peers)


def label(rows: list[Row], peers: dict[int, Peer]) -> int:
    """Add the node's labels to rows whose cookie the node knows; returns how many matched."""
    n = 0
    for r in rows:
        p: dict[str, Any] | None = peers.get(int(r.get("sock_cookie") or 0))  # type: ignore[assignment]
        if p is None:
            continue
        n += 1
        r["peer_id"] = p.get("peer_id")
        r["direction"] = p.get("direction")
        r["mesh"] = p.get("mesh")
        r["score"] = p.get("score")
        r["node_address"] = p.get("address")
    return n
