"""bench p2p's load generator against a real HTTP server on loopback (aiohttp, real sockets):
the schedule is open loop (slow answers do not delay later slots), in flight is bounded and
what the bound sheds is counted, and what was offered vs accepted is recorded."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from netdiag.bench.p2p_poster import TxPoster, due_times
from netdiag.nodeapi import NodeApi


@dataclass
class FakeNode:
    """POST /tx that answers once `release` is set (or at once), accepting every other tx
    when `refuse_odd`."""

    port: int = 0
    release: threading.Event = field(default_factory=threading.Event)
    received: list[int] = field(default_factory=list)
    max_open: int = 0
    refuse_odd: bool = False
    keepalive_s: float = 75.0
    _open: int = 0


@pytest.fixture
def node(request: pytest.FixtureRequest) -> Iterator[FakeNode]:
    fake = FakeNode(keepalive_s=getattr(request, "param", 75.0))
    started = threading.Event()
    loop = asyncio.new_event_loop()

    async def tx(request: web.Request) -> web.Response:
        body = await request.json()
        fake.received.append(int(body["nonce"]))
        fake._open += 1
        fake.max_open = max(fake.max_open, fake._open)
        while not fake.release.is_set():
            await asyncio.sleep(0.01)
        fake._open -= 1
        accepted = not (fake.refuse_odd and body["nonce"] % 2)
        return web.json_response({"txid": f"{body['nonce']:064x}", "accepted": accepted})

    async def serve() -> web.AppRunner:
        app = web.Application()
        app.router.add_post("/tx", tx)
        runner = web.AppRunner(app, keepalive_timeout=fake.keepalive_s)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        fake.port = runner.addresses[0][1]
        return runner

    def run() -> None:
        asyncio.set_event_loop(loop)
        runner = loop.run_until_complete(serve())
        started.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert started.wait(10)
    yield fake
    fake.release.set()
    loop.call_soon_threadsafe(loop.stop)
    t.join(10)


def _poster(node: FakeNode, count: int, **kw: object) -> TxPoster:
    api = NodeApi(None, node.port)
    # answers are held on purpose: a timeout no loaded test host reaches
    kw.setdefault("post_timeout_s", 120.0)
    return TxPoster({"a": api, "b": api}, 200.0, count, 16, b"test", **kw)  # type: ignore[arg-type]


def test_due_times_are_the_plan() -> None:
    assert due_times(4.0, 3) == [0.0, 0.25, 0.5]


def test_slow_answers_do_not_slow_the_schedule(node: FakeNode) -> None:
    """Every answer is held until all 20 POSTs are outstanding: a closed loop would send one;
    the open loop sends all 20 in their slots, over as many connections."""
    accepted: list[tuple[str, str]] = []
    poster = _poster(node, 20, on_accepted=lambda n, t: accepted.append((n, t)))
    releaser = threading.Thread(target=lambda: _release_when(node, 20), daemon=True)
    releaser.start()
    stats = poster.run()
    releaser.join(10)
    assert (stats.planned, stats.offered, stats.shed) == (20, 20, 0)
    assert stats.accepted == 20 and stats.failed == 0
    assert node.max_open == 20
    assert sorted(node.received) == list(range(20))
    assert {n for n, _ in accepted} == {"a", "b"}  # round-robin over the nodes
    row = stats.record()
    assert row["txs_offered"] == row["txs_planned"] == 20 and row["txs_sent"] == 20
    assert row["post_latency_p99_ms"] is not None and row["send_lag_p99_ms"] is not None


def _release_when(node: FakeNode, n: int) -> None:
    for _ in range(2000):
        if len(node.received) >= n:
            break
        threading.Event().wait(0.01)
    node.release.set()


def test_in_flight_is_bounded_and_the_shortfall_recorded(node: FakeNode) -> None:
    """With 3 POSTs outstanding and no answer, the other slots are shed, not sent late."""
    poster = _poster(node, 12, max_in_flight=3)
    releaser = threading.Thread(target=lambda: _release_after_plan(node, poster), daemon=True)
    releaser.start()
    stats = poster.run()
    releaser.join(10)
    assert (stats.offered, stats.shed) == (3, 9)
    assert stats.accepted == 3 and node.max_open == 3


def _release_after_plan(node: FakeNode, poster: TxPoster) -> None:
    for _ in range(2000):
        if poster.stats.offered + poster.stats.shed >= poster.stats.planned:
            break
        threading.Event().wait(0.01)
    node.release.set()


def test_refused_and_unreachable_posts_count_as_failed(node: FakeNode) -> None:
    node.release.set()
    node.refuse_odd = True
    stats = _poster(node, 10).run()
    assert (stats.offered, stats.accepted, stats.failed) == (10, 5, 5)
    dead = TxPoster({"x": NodeApi(None, 9, "127.0.0.1")}, 200.0, 4, 16, b"t").run()
    assert (dead.offered, dead.accepted, dead.failed) == (4, 0, 4)
    gone = TxPoster({"x": NodeApi("nd-no-such-netns", node.port)}, 200.0, 2, 16, b"t").run()
    assert (gone.offered, gone.failed) == (2, 2)


def test_stop_sheds_the_slots_not_reached(node: FakeNode) -> None:
    node.release.set()
    poster = _poster(node, 10)
    poster.stop.set()
    stats = poster.run()
    assert (stats.offered, stats.shed) == (0, 10)


def test_a_dead_node_gets_no_slot(node: FakeNode) -> None:
    node.release.set()
    to: list[str] = []
    stats = _poster(node, 6, alive=lambda n: n == "b", on_accepted=lambda n, _t: to.append(n)).run()
    assert stats.offered == 6 and to == ["b"] * 6
    none = _poster(node, 3, alive=lambda _n: False).run()
    assert (none.offered, none.shed) == (0, 3)


@pytest.mark.parametrize("node", [0.05], indirect=True)
def test_a_keep_alive_connection_the_node_closed_is_replaced(node: FakeNode) -> None:
    """The node closes idle connections (its keep-alive timeout, here 50 ms); slots 300 ms
    apart find theirs closed and are sent again on a fresh one, not lost."""
    node.release.set()
    api = NodeApi(None, node.port)
    stats = TxPoster({"a": api}, 1 / 0.3, 3, 16, b"t", post_timeout_s=120.0).run()
    assert (stats.offered, stats.accepted, stats.failed) == (3, 3, 0)
