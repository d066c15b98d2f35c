"""API bodies: deeply nested JSON and every other bad body to POST /tx.

A defended node answers each with a 4xx and a JSON error object, logs no traceback (the runner
counts tracebacks in the node log) and keeps answering /status.
"""

from __future__ import annotations

import http.client
import json
import time

from netdiag.bench.attack.base import AttackContext, Outcome

GOOD_HEX = "00" * 32
BODIES: list[tuple[str, bytes, str]] = [
    ("nested_list_60000", b"[" * 60000, "application/json"),
    ("nested_list_closed", b"[" * 5000 + b"]" * 5000, "application/json"),
    ("nested_object", b'{"a":' * 10000 + b"1" + b"}" * 10000, "application/json"),
    ("not_json", b"this is not json", "application/json"),
    ("empty", b"", "application/json"),
    ("invalid_utf8", b'{"sender": "\xff\xfe"}', "application/json"),
    ("json_array", b"[1, 2, 3]", "application/json"),
    ("json_string", b'"tx"', "application/json"),
    ("missing_fields", b"{}", "application/json"),
    (
        "wrong_types",
        json.dumps(
            {"sender": 1, "nonce": "x", "timestamp_ms": [], "payload": {}, "signature": None}
        ).encode(),
        "application/json",
    ),
    (
        "bad_hex",
        json.dumps(
            {"sender": "zz", "nonce": 1, "timestamp_ms": 1, "payload": "", "signature": "zz"}
        ).encode(),
        "application/json",
    ),
    (
        "huge_numbers",
        json.dumps(
            {
                "sender": GOOD_HEX,
                "nonce": 10**400,
                "timestamp_ms": -1,
                "payload": "",
                "signature": "00" * 64,
            }
        ).encode(),
        "application/json",
    ),
    ("float_overflow", b'{"nonce": 1e999}', "application/json"),
    ("nan", b'{"nonce": NaN}', "application/json"),
    ("too_large", b'{"payload": "' + b"a" * (1 << 20) + b'"}', "application/json"),
    ("wrong_content_type", b"sender=00", "application/x-www-form-urlencoded"),
]


def post(port: int, body: bytes, ctype: str, timeout_s: float = 10.0) -> tuple[int, bytes, float]:
    t0 = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request("POST", "/tx", body=body, headers={"Content-Type": ctype})
        resp = conn.getresponse()
        return resp.status, resp.read(), time.monotonic() - t0
    except (OSError, http.client.HTTPException):
        return 0, b"", time.monotonic() - t0
    finally:
        conn.close()


def is_json_error(body: bytes) -> bool:
    try:
        doc = json.loads(body)
    except ValueError:
        return False
    return isinstance(doc, dict) and "error" in doc


class NestedJson:
    name = "nested_json"
    summary = "nested JSON and other bad bodies to POST /tx: each a 4xx JSON error"
    rss_bound: float | None = 1.25
    growth_bound: float | None = None

    def run(self, ctx: AttackContext) -> Outcome:
        port = ctx.cluster.nodes[ctx.target_index].api_port
        bad: dict[str, int] = {}
        sent = 0
        end = time.monotonic() + ctx.duration_s
        slowest = 0.0
        while True:
            for kind, body, ctype in BODIES:
                status, answer, took = post(port, body, ctype)
                sent += 1
                slowest = max(slowest, took)
                if not (400 <= status < 500 and is_json_error(answer)):
                    bad[kind] = status
            ctx.progress(f"{sent} bad bodies posted, {len(bad)} kinds not answered 4xx+JSON")
            if time.monotonic() >= end:
                break
        kinds = ", ".join(f"{k}->{v or 'no answer'}" for k, v in sorted(bad.items()))
        return Outcome(
            defended=not bad,
            why=f"{len(BODIES) - len(bad)}/{len(BODIES)} kinds of bad body got a 4xx JSON "
            "error" + (f"; not: {kinds}" if bad else ""),
            figures={
                "bodies_sent": sent,
                "body_kinds": len(BODIES),
                "kinds_not_4xx_json": len(bad),
                "slowest_answer_ms": round(slowest * 1000, 1),
            },
        )


ATTACK = NestedJson()
