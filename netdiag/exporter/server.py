"""HTTP endpoints: /metrics (Prometheus text), /healthz (200 or 503, JSON), /verdicts (JSON).

A ThreadingHTTPServer in a daemon thread: a slow scraper never blocks the probe loop, and the
handlers only read state the loop publishes under locks.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from netdiag.errors import InputError

Health = Callable[[], tuple[bool, dict[str, Any]]]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        addr: tuple[str, int],
        metrics: Callable[[], bytes],
        health: Health,
        verdicts: Callable[[], dict[str, Any]],
    ) -> None:
        self.metrics, self.health, self.verdicts = metrics, health, verdicts
        if ":" in addr[0]:
            self.address_family = socket.AF_INET6
        super().__init__(addr, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # scrapes are not news
        return

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, code: int, obj: Any) -> None:
        body = (json.dumps(obj, separators=(",", ":"), default=str) + "\n").encode()
        self._send(code, body, "application/json")

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        if path == "/metrics":
            from prometheus_client.exposition import CONTENT_TYPE_LATEST

            self._send(200, self.server.metrics(), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            ok, doc = self.server.health()
            self._json(200 if ok else 503, doc)
        elif path == "/verdicts":
            self._json(200, self.server.verdicts())
        elif path == "/":
            self._send(
                200,
                b"netdiag exporter: /metrics /healthz /verdicts\n",
                "text/plain; charset=utf-8",
            )
        else:
            self._json(
                404,
                {"error": f"no such path {path}", "paths": ["/metrics", "/healthz", "/verdicts"]},
            )

    do_HEAD = do_GET


class HttpServer:
    def __init__(
        self,
        listen: str,
        metrics: Callable[[], bytes],
        health: Health,
        verdicts: Callable[[], dict[str, Any]],
    ) -> None:
        host, _, port = listen.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        try:
            self._srv = _Server((host, int(port)), metrics, health, verdicts)
        except OSError as e:
            raise InputError(
                f"exporter cannot listen on {listen} ({e.strerror or e})",
                "choose a free port (--listen HOST:PORT) or an address of this host",
            ) from e
        self.address = f"{host}:{self._srv.server_address[1]}"
        self._thread = threading.Thread(
            target=self._srv.serve_forever, name="netdiag-http", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        if self._thread.is_alive():  # shutdown() waits for serve_forever: only when it runs
            self._srv.shutdown()
        self._srv.server_close()
