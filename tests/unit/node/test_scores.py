"""Scores and bans across reconnects, through the sans-IO core on a manual clock."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from netdiag.node.crypto import Identity
from netdiag.node.protocol import Violation
from netdiag.node.scores import ScoreBook
from tests.unit.node.corekit import MemLink, World, lab


def violate(world: World, link: MemLink) -> None:
    """What the transport does on a protocol violation: report it, then close."""
    link.core.on_violation(link, Violation("handshake_replay", "Hello after the handshake"))
    link.close("protocol violation")
    world.sched.run_due()


@pytest.mark.parametrize("max_violations", [1, 3])
def test_one_violation_per_connection_ends_in_a_ban(tmp_path: Path, max_violations: int) -> None:
    spec, _ = lab(1)
    world = World(tmp_path, spec)
    core = world.node("n", max_violations=max_violations, ban_threshold=-10_000.0)
    pid = Identity.generate().node_id
    accepted = 0
    for _ in range(max_violations + 3):
        link = world.attach(core, peer_id=pid)
        if not link.is_open:
            break
        accepted += 1
        violate(world, link)
        world.run(1.0)
    assert accepted == max_violations + 1, "banned by the violation after max_violations"
    assert core.book.peer_banned(pid)
    assert "is banned" in world.events("n", "peer_refused")[-1]["reason"]


def test_a_banned_peers_reconnect_is_refused_with_the_bans_reason_and_time_left(
    tmp_path: Path,
) -> None:
    """The ban's own Disconnect is lost when the ban resets the socket (more than
    transport.UNWANTED_MAX of output the peer did not read): the refusal of its reconnect says
    why instead — one Disconnect (reasons are cut at 200 characters), no more."""
    spec, _ = lab(1)
    world = World(tmp_path, spec)
    core = world.node("n", max_violations=1, ban_threshold=-10_000.0, ban_seconds=600.0)
    pid = Identity.generate().node_id
    for _ in range(2):
        violate(world, world.attach(core, peer_id=pid))
        world.run(1.0)
    assert core.book.peer_banned(pid)
    world.run(100.0)
    link = world.attach(core, peer_id=pid)
    reason = link.close_reason or ""
    assert not link.is_open and "is banned" in reason, reason
    assert "protocol violations on record" in reason, reason  # the ban's why
    left = re.search(r"\((\d+) s more\)", reason)
    assert left and 490 <= int(left.group(1)) <= 500, reason  # and how long it still lasts
    assert len(reason) <= 200, len(reason)  # whole in one Disconnect


def test_a_ban_lasts_across_reconnects_for_its_duration_then_expires(tmp_path: Path) -> None:
    spec, _ = lab(1)
    world = World(tmp_path, spec)
    core = world.node("n", ban_seconds=60.0)
    pid = Identity.generate().node_id
    for _ in range(2):
        violate(world, world.attach(core, peer_id=pid))
    assert core.book.peer_banned(pid)
    world.run(30.0)
    assert not world.attach(core, peer_id=pid).is_open, "still banned half-way"
    world.run(31.0)
    assert world.attach(core, peer_id=pid).is_open, "the ban ran out"


def test_scores_persist_across_reconnects_and_decay(tmp_path: Path) -> None:
    spec, _ = lab(1)
    world = World(tmp_path, spec)
    core = world.node("n", score_half_life_s=10.0)
    pid = Identity.generate().node_id
    link = world.attach(core, peer_id=pid)
    core.policy.penalize(link, 60.0, "test")
    link.close("bye")
    world.sched.run_due()
    again = world.attach(core, peer_id=pid)
    assert again.is_open
    assert core.scores.peer_score(pid) == pytest.approx(-60.0, abs=0.5), "kept across reconnect"
    core.policy.penalize(again, 60.0, "test")  # -120 <= -100: banned on the new connection
    assert core.book.peer_banned(pid) and not again.is_open
    world.run(100.0)  # ten half-lives
    assert core.scores.peer_score(pid) > -1.0


def test_a_penalty_that_decays_faster_than_it_repeats_never_bans(tmp_path: Path) -> None:
    spec, _ = lab(1)
    world = World(tmp_path, spec)
    core = world.node("n", score_half_life_s=10.0)
    pid = Identity.generate().node_id
    for _ in range(10):
        link = world.attach(core, peer_id=pid)
        core.policy.penalize(link, 40.0, "test")
        link.close("bye")
        world.run(60.0)
    assert not core.book.peer_banned(pid)


def test_rotating_keys_from_one_address_gets_the_address_banned(tmp_path: Path) -> None:
    spec, _ = lab(1)
    world = World(tmp_path, spec)
    core = world.node("n", ip_ban_factor=3.0)
    keys_used = 0
    while keys_used < 10:
        link = world.attach(core, host="10.6.6.6")
        if not link.is_open:
            break
        keys_used += 1
        core.policy.penalize(link, 100.0, "test")  # each identity banned at once
    assert keys_used == 3, "the third banned identity gets the address banned"
    assert core.book.ip_banned("10.6.6.6")
    assert world.attach(core, host="10.6.6.7").is_open, "other addresses are not affected"


def test_score_tables_are_bounded() -> None:
    now = [0.0]
    book = ScoreBook(lambda: now[0], half_life_s=60.0, max_entries=100)
    for i in range(1000):
        book.penalize(i.to_bytes(4, "big"), f"10.0.{i // 256}.{i % 256}", float(i))
    assert len(book.peers.entries) <= 100 and len(book.ips.entries) <= 100
    assert book.peer_score((999).to_bytes(4, "big")) == -999.0, "the worst is kept"


def test_a_slow_but_moving_reader_is_not_scored_a_stopped_one_is(tmp_path: Path) -> None:
    # review 2: the stall check cuts a reader under MIN_PEER_RATE that still moves as
    # write_slow (a node with a slow uplink would otherwise penalise every peer it serves),
    # one that acknowledges nothing as write_stall, which costs score
    spec, _ = lab(1)
    world = World(tmp_path, spec)
    core = world.node("n")
    slow, stopped = Identity.generate().node_id, Identity.generate().node_id
    core.on_limit(world.attach(core, peer_id=slow), "write_slow")
    core.on_limit(world.attach(core, peer_id=stopped), "write_stall")
    assert core.scores.peer_score(slow) == pytest.approx(0.0, abs=0.01)
    assert core.scores.peer_score(stopped) < -5.0
    assert world.events("n", "peer_slow_reader") and world.events("n", "peer_not_reading")
