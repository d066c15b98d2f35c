"""PeerBook: dialing budget and backoff, learned addresses, peer and IP bans."""

from __future__ import annotations

from netdiag.node.config import load_config
from netdiag.node.peers import PeerBook


class Clock:
    t = 100.0

    def __call__(self) -> float:
        return self.t


def book(**kw: object) -> tuple[PeerBook, Clock]:
    cfg = load_config(None, {}, {"data_dir": "d", "genesis": "g", **kw})
    clock = Clock()
    return PeerBook(cfg, clock), clock


def test_dial_budget_backoff_and_reset() -> None:
    b, clock = book(peers=["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"], target_outbound=2)
    assert b.to_dial(set(), set(), outbound=0) == ["127.0.0.1:1", "127.0.0.1:2"]
    assert b.to_dial(set(), set(), outbound=0) == ["127.0.0.1:3"]  # others wait reconnect_min
    assert b.to_dial({"127.0.0.1:1"}, {"127.0.0.1:2"}, outbound=2) == []
    delays = [b.dial_failed("127.0.0.1:1") for _ in range(10)]
    assert delays[:4] == [1.0, 2.0, 4.0, 8.0] and delays[-1] == 60.0  # 0.5 s doubling, cap 60
    clock.t += 30
    assert "127.0.0.1:1" not in b.to_dial(set(), set(), 0)
    b.connected("127.0.0.1:1")
    assert b.addrs["127.0.0.1:1"].failures == 0


def test_learned_addresses_are_bounded_and_validated() -> None:
    b, _ = book(max_known_addrs=3)
    b.mark_self("127.0.0.1:9")
    b.learn(["127.0.0.1:9", "nonsense", "127.0.0.1:5", "127.0.0.1:6", "127.0.0.1:7"])
    assert list(b.addrs) == ["127.0.0.1:5", "127.0.0.1:6", "127.0.0.1:7"]


def test_bans_expire_and_failed_handshakes_ban_an_ip() -> None:
    b, clock = book(max_failed_handshakes_per_ip=3, ban_seconds=10)
    b.ban_peer(b"p")
    assert b.peer_banned(b"p")
    assert [b.handshake_failed("10.0.0.1") for _ in range(4)] == [False, False, False, True]
    assert b.ip_banned("10.0.0.1") and not b.ip_banned("10.0.0.2")
    clock.t += 61  # failures older than the window do not count
    assert not b.handshake_failed("10.0.0.2")
    clock.t += 11
    b.expire()
    assert not b.peer_banned(b"p") and not b.ip_banned("10.0.0.1") and not b.banned
