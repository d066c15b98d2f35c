"""--node: rows joined by socket cookie with a node's /peers JSON served over real HTTP."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from netdiag.errors import InputError, NetdiagError
from netdiag.trace import nodejoin

PEERS = [
    {
        "peer_id": "7f3a9c",
        "address": "127.0.0.1:30304",
        "direction": "outbound",
        "mesh": True,
        "score": 12.5,
        "socket_cookie": 4242,
    },
    {
        "peer_id": "b00b1e",
        "address": "127.0.0.1:30305",
        "direction": "inbound",
        "mesh": False,
        "score": -1.0,
        "socket_cookie": "77",
    },
    {"peer_id": "nocookie", "address": "x"},
]


@pytest.fixture
def node_stub() -> Iterator[tuple[str, dict[str, Any]]]:
    state: dict[str, Any] = {"body": json.dumps(PEERS).encode(), "hits": 0}

    class H(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state["hits"] += 1
            if self.path != "/peers":
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(state["body"])

        def log_message(self, *_a: Any) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", state
    finally:
        srv.shutdown()
        srv.server_close()


def test_join_labels_rows_by_cookie(node_stub: tuple[str, dict[str, Any]]) -> None:
    url, state = node_stub
    peers = nodejoin.by_sock_cookie(nodejoin.fetch_peers(url + "/"))
    assert set(peers) == {4242, 77}
    rows = [
        {"sock_cookie": 4242, "peer": "127.0.0.1:30304"},
        {"sock_cookie": 77},
        {"sock_cookie": 5},
    ]
    assert nodejoin.label(rows, peers) == 2
    assert rows[0]["peer_id"] == "7f3a9c" and rows[0]["mesh"] is True and rows[0]["score"] == 12.5
    assert rows[1]["direction"] == "inbound"
    assert "peer_id" not in rows[2]
    assert state["hits"] == 1


def test_wrapped_shape_is_accepted(node_stub: tuple[str, dict[str, Any]]) -> None:
    url, state = node_stub
    state["body"] = json.dumps({"peers": PEERS[:1]}).encode()
    assert list(nodejoin.by_sock_cookie(nodejoin.fetch_peers(url))) == [4242]


def test_errors_say_what_and_how(node_stub: tuple[str, dict[str, Any]]) -> None:
    url, state = node_stub
    with pytest.raises(InputError, match="http"):
        nodejoin.fetch_peers("127.0.0.1:1")
    state["body"] = b"<html>"
    with pytest.raises(NetdiagError, match="did not return JSON"):
        nodejoin.fetch_peers(url)
    with pytest.raises(NetdiagError, match="cannot fetch"):
        nodejoin.fetch_peers("http://127.0.0.1:9", timeout_s=0.5)
