"""REST API (aiohttp), bound to 127.0.0.1 by default.

GET /status, /block/{height|hash}, /peers, /peers/table (Kademlia), /metrics (Prometheus),
/message/{id};
POST /tx with a JSON signed transaction (hex fields).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from netdiag.node.apiguard import ApiGuard, ApiLimits, GuardedRunner, OnLimit
from netdiag.node.config import split_hostport
from netdiag.node.limits import API_MAX_HEADERS, API_MAX_LINE
from netdiag.node.model import Block, Tx
from netdiag.node.views import NodeView

MAX_BODY = 64 << 10
NODE_KEY = web.AppKey("node", object)  # holds the NodeView
TIMEOUT_KEY = web.AppKey("header_timeout_s", float)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def block_json(b: Block) -> dict[str, Any]:
    h = b.header
    return {
        "height": h.height,
        "hash": b.hash.hex(),
        "prev_hash": h.prev_hash.hex(),
        "timestamp_ms": h.timestamp_ms,
        "producer": h.producer.hex(),
        "tx_root": h.tx_root.hex(),
        "reveal": h.reveal.hex(),
        "mix": h.mix.hex(),
        "state_root": h.state_root.hex(),
        "signature": b.signature.hex(),
        "size_bytes": len(b.encode()),
        "txs": [tx_json(t) for t in b.txs],
    }


def tx_json(t: Tx) -> dict[str, Any]:
    return {
        "txid": t.txid().hex(),
        "sender": t.sender.hex(),
        "nonce": t.nonce,
        "timestamp_ms": t.timestamp_ms,
        "payload": t.payload.hex(),
        "signature": t.signature.hex(),
        "to": t.to.hex(),
        "amount": t.amount,
    }


class TxBody(msgspec.Struct, forbid_unknown_fields=True):
    """POST /tx body. Decoded straight into this type, so a body of any other shape (deep
    nesting included) fails at its first wrong token, without building or recursing into it."""

    sender: str
    nonce: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
    timestamp_ms: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
    payload: str
    signature: str
    to: str = ""  # a transfer's recipient (hex key); empty: data only
    amount: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)] = 0
    txid: str = ""  # tx_json writes it; derived from the rest, so ignored here


def tx_from_body(body: bytes) -> Tx:
    """Raise ValueError with a one-line reason for any body that is not a transaction."""
    try:
        doc = msgspec.json.decode(body, type=TxBody)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise ValueError(str(e)) from None
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    try:
        tx = Tx(
            bytes.fromhex(doc.sender),
            doc.nonce,
            doc.timestamp_ms,
            bytes.fromhex(doc.payload),
            bytes.fromhex(doc.signature),
            bytes.fromhex(doc.to),
            doc.amount,
        )
    except ValueError:
        raise ValueError("sender, payload, signature and to must be hex strings") from None
    return tx


def _node(request: web.Request) -> NodeView:
    return request.app[NODE_KEY]  # type: ignore[return-value]


def _error(status: int, what: str, reason: str) -> web.Response:
    return web.json_response({"error": what, "reason": reason}, status=status)


async def status(request: web.Request) -> web.Response:
    return web.json_response(_node(request).status())


async def peers(request: web.Request) -> web.Response:
    return web.json_response(_node(request).peers())


async def table(request: web.Request) -> web.Response:
    return web.json_response(_node(request).table())


async def metrics(request: web.Request) -> web.Response:
    body = _node(request).metrics_text()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def block(request: web.Request) -> web.Response:
    node = _node(request)
    ident = request.match_info["ident"].removeprefix("0x")
    if ident.isascii() and ident.isdigit() and len(ident) <= 30:
        height = int(ident)
        b = node.block_at(height)
    elif len(ident) == 64:
        try:
            b = node.block_by_hash(bytes.fromhex(ident))
        except ValueError:
            return _error(400, f"{ident!r} is not hex", "bad_id")
    else:
        return _error(400, "block id must be a height or a 32-byte hex hash", "bad_id")
    if b is None:
        return _error(404, f"no block {ident}", "not_found")
    return web.json_response(block_json(b))


async def message(request: web.Request) -> web.Response:
    try:
        mid = bytes.fromhex(request.match_info["mid"])
    except ValueError:
        return _error(400, "message id must be hex", "bad_id")
    stats = _node(request).message_stats(mid)
    return web.json_response(stats) if stats else _error(404, "message not seen", "not_found")


async def post_tx(request: web.Request) -> web.Response:
    if request.content_type != "application/json":
        return _error(415, "POST /tx takes application/json", "content_type")
    try:  # a slow body is cut off like a slow header (the keep-alive timer is off meanwhile)
        body = await asyncio.wait_for(request.read(), request.app[TIMEOUT_KEY])
    except TimeoutError:
        return _error(408, "request body not received in time", "timeout")
    try:
        tx = tx_from_body(body)
    except ValueError as e:
        return _error(400, f"malformed transaction: {str(e)[:200]}", "format")
    # Off this loop: the node checks the tx on its own loop, which may be busy.
    verdict, txid = await asyncio.to_thread(_node(request).submit_local_tx, tx)
    if verdict == "reject":
        return _error(400, "transaction rejected (see node log for the rule)", "invalid")
    if verdict == "busy":  # too many transactions waiting for their signature check
        return _error(503, "node busy checking transactions: retry", "busy")
    if verdict == "error":  # the check raised on the node loop (logged there)
        return _error(500, "internal error", "internal")
    return web.json_response(
        {"txid": txid.hex(), "accepted": verdict == "accept", "duplicate": verdict == "ignore"},
        status=202 if verdict == "accept" else 200,
    )


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error answer is a JSON object; nothing a client sends prints a traceback."""
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return _error(e.status, e.reason, e.reason.lower().replace(" ", "_"))
    except (asyncio.CancelledError, ConnectionError):
        raise
    except Exception as e:  # a bug in a handler: the client gets a JSON 500, the log one line
        sys.stderr.write(
            json.dumps({"event": "api_error", "msg": f"{request.method} {request.path}: {e!r}"})
            + "\n"
        )
        return _error(500, "internal error", "internal")


async def start_api(
    node: NodeView,
    listen: str,
    limits: ApiLimits | None = None,
    on_limit: OnLimit = lambda limit: None,
) -> tuple[web.AppRunner, int]:
    """``limits.header_timeout_s``: a connection whose request header is not complete by then
    (from its accept, or from the previous response on keep-alive) is closed — aiohttp's
    keep-alive timer runs from accept() until a whole request has arrived. Bodies get the same
    budget. The write timeout and the connection limit are apiguard.py's; ``on_limit`` is told
    of each cut (``limit_hits``)."""
    limits = limits or ApiLimits()
    guard = ApiGuard(limits, on_limit)
    app = web.Application(
        client_max_size=MAX_BODY,
        middlewares=[guard.middleware, json_errors],
        handler_args={"max_headers": API_MAX_HEADERS, "max_line_size": API_MAX_LINE},
    )
    app[NODE_KEY] = node
    app[TIMEOUT_KEY] = limits.header_timeout_s
    app.add_routes(
        [
            web.get("/status", status),
            web.get("/peers", peers),
            web.get("/peers/table", table),
            web.get("/metrics", metrics),
            web.get("/block/{ident}", block),
            web.get("/message/{mid}", message),
            web.post("/tx", post_tx),
        ]
    )
    runner = GuardedRunner(
        app,
        guard,
        access_log=None,
        handle_signals=False,
        keepalive_timeout=limits.header_timeout_s,
    )
    await runner.setup()
    host, port = split_hostport(listen)
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server  # aiohttp keeps the bound asyncio server here
    bound = server.sockets[0].getsockname()[1] if server is not None else port  # type: ignore[attr-defined]
    return runner, int(bound)


async def stop_api(runner: object) -> None:
    assert isinstance(runner, web.AppRunner)
    await runner.cleanup()
