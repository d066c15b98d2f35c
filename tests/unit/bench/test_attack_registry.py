"""bench attack's extension point and verdict rules, without processes."""

from __future__ import annotations

import sys
import types

import pytest

from netdiag.bench.attack.base import AttackContext, Outcome
from netdiag.bench.attack.runner import ATTACKS, judge, load_attack
from netdiag.errors import InputError


class _Noop:
    name = "noop"
    summary = "does nothing"
    rss_bound: float | None = 1.25
    growth_bound: float | None = 0.9

    def run(self, ctx: AttackContext) -> Outcome:
        return Outcome(why="nothing")


def test_every_shipped_attack_loads_and_names_itself() -> None:
    for name in ATTACKS:
        attack = load_attack(name)
        assert attack.name == name and attack.summary


def test_an_outside_module_is_an_attack(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = types.ModuleType("my_attack_mod")
    mod.ATTACK = _Noop()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "my_attack_mod", mod)
    assert load_attack("my_attack_mod").name == "noop"
    bare = types.ModuleType("not_an_attack")
    monkeypatch.setitem(sys.modules, "not_an_attack", bare)
    with pytest.raises(InputError, match="no ATTACK"):
        load_attack("not_an_attack")
    with pytest.raises(InputError, match="cannot import"):
        load_attack("no.such.module_xyz")


def test_judge_names_every_failed_bound() -> None:
    a = _Noop()
    ok, why = judge(a, Outcome(), True, 0, 1.0, 1.1)
    assert ok and why == ""
    ok, why = judge(a, Outcome(), True, 0, 0.5, 2.0)
    assert not ok and "growth 0.50" in why and "RSS after/before 2.00" in why
    ok, why = judge(a, Outcome(defended=False), False, 3, None, None)
    assert not ok
    assert "died" in why and "3 tracebacks" in why and "own check" in why and "None" in why


def test_judge_against_a_warm_baseline_says_so() -> None:
    a = _Noop()
    ok, why = judge(a, Outcome(), True, 0, 1.0, 1.3, "warm")
    assert not ok and "RSS after/warm 1.30" in why


def test_a_warm_up_larger_than_its_bound_fails_even_when_after_is_back_to_warm() -> None:
    flood = load_attack("mempool_flood")
    ok, why = judge(flood, Outcome(), True, 0, 1.0, 1.01, "warm", warm_step=2.0)
    assert not ok and "RSS warm/before 2.00 > 1.5" in why
    ok, why = judge(flood, Outcome(), True, 0, 1.0, 1.01, "warm", warm_step=1.25)
    assert ok, why
    ok, why = judge(flood, Outcome(), True, 0, 1.0, 1.01, "warm", warm_step=None)
    assert not ok and "warm/before None" in why


class _FakeNode:
    """The target node as mempool_flood sees it: an API that takes every tx, an RSS read."""

    def __init__(self, port: int) -> None:
        self.api_port = port
        self.rss_reads = 0

    def rss_bytes(self) -> int:
        self.rss_reads += 1
        return (60 + self.rss_reads) << 20  # grows at each read: which read is the baseline

    def status(self) -> dict[str, object]:
        return {"mempool_txs": 3}


def test_mempool_flood_measures_its_warm_baseline_between_warm_up_and_flood() -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from netdiag.bench.attack import mempool_flood

    class Api(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(202)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        node = _FakeNode(server.server_address[1])
        cluster = types.SimpleNamespace(nodes=[node])
        ctx = AttackContext(
            cluster=cluster,  # type: ignore[arg-type]
            source_ip="127.0.0.20",
            duration_s=0.3,
            quick=True,
            progress=lambda s: None,
        )
        out = mempool_flood.ATTACK.run(ctx)
    finally:
        server.shutdown()
        server.server_close()
    assert out.rss_baseline == 61 << 20  # read once, after the warm-up, before the flood
    assert out.figures["warmup_txs_posted"] and out.figures["txs_posted"]
    assert out.figures["posts_failed"] == 0
    assert mempool_flood.ATTACK.rss_bound is not None and mempool_flood.ATTACK.rss_bound < 1.25
