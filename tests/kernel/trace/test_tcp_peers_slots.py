"""tcp_peers' rows in the direct-mapped `slots` array and in the `peers` overflow hash give the
same per-connection figures; a closed socket's slot goes to a new socket with a fresh row."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable

from netdiag.bench.traffic import Pair, cookie_of, make_pair
from netdiag.trace import engine, manifest
from netdiag.trace.decode import Row
from tests.kernel.trace.conftest import wait_quiet


def _session(port: int, **defines: int) -> engine.Session:
    p = manifest.load("tcp_peers")
    return engine.Session(p, engine.defines_for(p, (port,), False, defines))


def _rows(s: engine.Session) -> dict[int, Row]:
    return {r["sock_cookie"]: r for r in s.read().rows}


def _peek(s: engine.Session, table: str) -> dict[int, object]:
    """Rows of one map by cookie, read without the engine (no closed row marked reported)."""
    assert s.bpf is not None
    return {int(v.cookie): v for _k, v in s.bpf.table(table).items() if int(v.cookie)}


def _until(ok: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Poll until ok() (the events arrive in softirq/after close, not at a fixed delay)."""
    end = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < end, f"not within {timeout} s: {what}"
        time.sleep(0.01)


def test_overflow_rows_agree_with_slot_rows_on_the_same_traffic(
    loopback_pair: Callable[..., Pair],
) -> None:
    """Both attached at once see the same events; with one slot, at least one of the pair's
    two sockets has its row in the overflow hash."""
    pair = loopback_pair(echo=True, cc="cubic")
    cookies = (pair.cookie, cookie_of(pair.server))
    with _session(pair.port) as slotted, _session(pair.port, SLOTS=1) as overflow:
        pair.send(8 << 20)
        pair.ping_pong(5)
        # the client's delayed ACK of the last `!` may land between the two reads below (it
        # moved the server's bytes_acked 3 -> 4 between them under load): wait it out
        wait_quiet(cookies)

        def settled() -> bool:  # both programs saw every socket, and the same ACK count
            x = {c: int(v.events) for t in ("slots", "peers") for c, v in _peek(slotted, t).items()}
            y = {
                c: int(v.events) for t in ("slots", "peers") for c, v in _peek(overflow, t).items()
            }
            return all(x.get(c, 0) > 0 and x.get(c) == y.get(c) for c in cookies)

        with contextlib.suppress(AssertionError):  # a rare missed event: compared below
            _until(settled, "the same events in both programs", 2.0)
        a, b = _rows(slotted), _rows(overflow)
        assert overflow.bpf is not None
        in_hash = {int(v.cookie) for _k, v in overflow.bpf.table("peers").items()}
        pair.close()

        def closed(s: engine.Session) -> bool:
            rows = {c: v for t in ("slots", "peers") for c, v in _peek(s, t).items()}
            return cookies[0] in rows and int(rows[cookies[0]].closed_ns) > 0

        _until(lambda: closed(slotted) and closed(overflow), "the client's close in both")
        a_closed, b_closed = _rows(slotted), _rows(overflow)
        a_after, b_after = _rows(slotted), _rows(overflow)
    assert in_hash & set(cookies), "one slot: the other socket's row overflows"
    for cookie in cookies:
        assert cookie in a and cookie in b, f"no row for {cookie}: {list(a)} / {list(b)}"
        x, y = a[cookie], b[cookie]
        assert x["events"] > 0
        # the same ACKs, bar the rare event the kernel skipped for one program (a miss)
        assert 0.98 * x["events"] <= y["events"] <= x["events"] / 0.98
        for k in ("bytes_acked", "srtt_min_us", "srtt_max_us", "snd_cwnd", "ssthresh", "rport"):
            assert x[k] == y[k], (k, x[k], y[k])
        assert sum(x["srtt_hist"]) > 0 and sum(y["srtt_hist"]) > 0
        assert x["samples"] == x["events"] and y["samples"] == y["events"]
    client = a_closed[cookies[0]], b_closed[cookies[0]]
    assert all(r["state"] == "CLOSE" and r["closed_ns"] > 0 for r in client)
    assert cookies[0] not in a_after and cookies[0] not in b_after, "reported once"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_closed_sockets_slot_goes_to_a_new_socket_with_a_fresh_row() -> None:
    p1, p2 = _free_port(), _free_port()
    p = manifest.load("tcp_peers")
    one_slot = {"SLOTS": 1, "SLOT_REUSE_NS": 1}  # reusable as soon as its owner closed
    pairs: list[Pair] = []
    try:
        with engine.Session(p, engine.defines_for(p, (p1, p2), False, one_slot)) as s:
            first = make_pair(None, None, "127.0.0.1", port=p1)
            pairs.append(first)
            first.send(4 << 20)
            first.wait_received(4 << 20)
            old = {first.cookie, cookie_of(first.server)}
            first.close()

            def both_closed() -> bool:
                rows = {c: v for t in ("slots", "peers") for c, v in _peek(s, t).items()}
                return all(c in rows and int(rows[c].closed_ns) > 0 for c in old)

            _until(both_closed, "the first pair's close")
            closed = _rows(s)
            second = make_pair(None, None, "127.0.0.1", port=p2)
            pairs.append(second)
            new = {second.cookie, cookie_of(second.server)}
            second.send(1 << 20)
            second.wait_received(1 << 20)
            client_c = second.cookie

            seen: list[int] = []

            def acked() -> bool:  # the client's row has ACKs and its bytes_acked settled
                rows = {c: v for t in ("slots", "peers") for c, v in _peek(s, t).items()}
                seen.append(int(rows[client_c].bytes_acked) if client_c in rows else 0)
                return len(seen) > 5 and seen[-1] > 0 and seen[-1] == seen[-6]

            _until(acked, "the new client's ACKs")
            now = _rows(s)
            assert s.bpf is not None
            owner = {int(v.cookie) for _k, v in s.bpf.table("slots").items()}
    finally:
        for x in pairs:
            with contextlib.suppress(OSError):
                x.close()
    assert old <= set(closed), f"closed rows missing: {old - set(closed)}"
    assert all(closed[c]["state"] == "CLOSE" for c in old)
    closed_at = max(closed[c]["closed_ns"] for c in old)
    assert not old & set(now), "the closed rows were reported again"
    assert owner & new, f"the slot was not reused: owner {owner}, new sockets {new}"
    for c in new:
        r = now[c]
        assert r["first_ns"] > closed_at, "a reused slot's row starts afresh"
        assert r["events"] > 0 and r["state"] == "ESTABLISHED"
    client = next(c for c in new if now[c]["rport"] == p2)
    assert 0 < now[client]["bytes_acked"] <= (1 << 20) + 1
