"""Admission and resource limits: counted from accept(), per-IP rate, handshake cap, memory
budgets, file-descriptor fit (sans-IO core on a manual clock; no sockets)."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest

from netdiag.node.config import NodeConfig
from netdiag.node.errors import ConfigError
from netdiag.node.resources import MemoryBudget, MiB, fit_fds, resolve_limits
from tests.unit.node.corekit import MemLink, World, lab


def socket_from(world: World, host: str) -> MemLink:
    """An accepted socket that has not completed any handshake yet."""
    core = world.cores[0]
    link = MemLink(world, core, None, False, host)
    return link


def test_sockets_in_handshake_count_against_the_handshake_cap(tmp_path: Path) -> None:
    world = World(tmp_path, lab(1)[0])
    core = world.node("n", max_pending_handshakes=3, conn_rate_per_ip=0.0)
    admitted = [core.peering.admit_inbound(socket_from(world, f"10.0.0.{i}")) for i in range(5)]
    assert admitted == [True, True, True, False, False]
    hits = core.metrics.limit_hits.labels("max_pending_handshakes")._value.get()
    assert hits == 2


def test_sockets_in_handshake_count_against_the_per_ip_limit(tmp_path: Path) -> None:
    world = World(tmp_path, lab(1)[0])
    core = world.node("n", max_inbound_per_ip=2, conn_rate_per_ip=0.0)
    first = [core.peering.admit_inbound(socket_from(world, "10.0.0.9")) for _ in range(3)]
    assert first == [True, True, False]
    assert core.peering.admit_inbound(socket_from(world, "10.0.0.10"))


def test_a_failed_handshake_frees_its_slot_and_counts_toward_the_ip_ban(tmp_path: Path) -> None:
    world = World(tmp_path, lab(1)[0])
    core = world.node(
        "n", max_inbound_per_ip=1, conn_rate_per_ip=0.0, max_failed_handshakes_per_ip=2
    )
    for i in range(3):
        link = socket_from(world, "10.0.0.7")
        assert core.peering.admit_inbound(link), f"attempt {i}: the slot was freed"
        core.on_closed(link, "TLS handshake failed: WRONG_VERSION_NUMBER")
    assert core.book.ip_banned("10.0.0.7"), "TLS-level failures count toward the IP ban"
    assert not core.peering.admit_inbound(socket_from(world, "10.0.0.7"))


def test_connection_rate_per_ip(tmp_path: Path) -> None:
    world = World(tmp_path, lab(1)[0])
    core = world.node("n", conn_rate_per_ip=1.0, conn_burst_per_ip=3, max_inbound_per_ip=100)
    got = []
    for _ in range(5):
        link = socket_from(world, "10.0.0.5")
        got.append(core.peering.admit_inbound(link))
        core.on_closed(link, "done")
    assert got == [True, True, True, False, False]
    world.run(2.0)
    assert core.peering.admit_inbound(socket_from(world, "10.0.0.5")), "tokens come back"


def test_memory_budget_per_connection_and_for_the_node() -> None:
    budget = MemoryBudget(per_conn=100, total=250)
    a, b, c = object(), object(), object()
    assert budget.update(a, 100) is None
    assert budget.update(b, 100) is None
    assert "over its budget" in (budget.update(c, 101) or "")
    assert "node memory budget" in (budget.update(c, 60) or "")
    assert budget.update(c, 50) is None and budget.used == 250
    budget.release(a)
    assert budget.used == 150 and budget.update(c, 100) is None
    assert budget.update(b, 10) is None, "shrinking is always allowed"


def test_limits_scale_with_the_machine(tmp_path: Path) -> None:
    cfg = NodeConfig(data_dir=str(tmp_path), genesis="g")
    small = resolve_limits(cfg, phys_mem=512 * MiB)
    big = resolve_limits(cfg, phys_mem=64 << 30)
    mid = resolve_limits(cfg, phys_mem=4 << 30)
    assert small.node_memory_bytes == 128 * MiB and big.node_memory_bytes == 1024 * MiB
    assert mid.node_memory_bytes == 512 * MiB
    assert small.conn_memory_bytes <= small.node_memory_bytes
    fixed = resolve_limits(
        NodeConfig(data_dir=str(tmp_path), genesis="g", node_memory_bytes=200 * MiB),
        phys_mem=64 << 30,
    )
    assert fixed.node_memory_bytes == 200 * MiB


def test_fd_budget_cuts_inbound_or_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    limits = {"soft": 150, "hard": 150}

    def getrlimit(_: int) -> tuple[int, int]:
        return limits["soft"], limits["hard"]

    def setrlimit(_: int, value: tuple[int, int]) -> None:
        if value[0] > limits["hard"]:
            raise ValueError("not allowed")
        limits["soft"] = value[0]

    monkeypatch.setattr(resource, "getrlimit", getrlimit)
    monkeypatch.setattr(resource, "setrlimit", setrlimit)
    assert fit_fds(64, 16) == (64, 150)
    assert fit_fds(200, 16) == (150 - 16 - 64, 150), "inbound cut to what fits"
    limits.update(soft=100, hard=400)
    assert fit_fds(200, 16) == (200, 280), "soft limit raised toward the hard one"
    limits.update(soft=80, hard=80)
    with pytest.raises(ConfigError, match="RLIMIT_NOFILE 80"):
        fit_fds(64, 16)


def test_stalled_handshakes_are_evicted_so_newcomers_are_not_starved(tmp_path: Path) -> None:
    world = World(tmp_path, lab(1)[0])
    core = world.node("n", max_pending_handshakes=4, conn_rate_per_ip=0.0, handshake_timeout_s=5.0)
    held: list[MemLink] = []
    for i, host in enumerate(["10.6.0.1"] * 3 + ["10.6.0.2"]):
        # each socket is accepted when it is made: its age is what eviction orders by
        link = socket_from(world, host)
        held.append(link)
        assert core.peering.admit_inbound(link)
        world.run(0.1 * (i + 1))
    fresh = socket_from(world, "10.0.0.50")
    world.run(0.1)
    assert core.peering.admit_inbound(fresh), "the table is full of stale handshakes"
    evicted = [link for link in held if link.close_reason is not None]
    assert evicted == [held[0]], "the oldest of the address holding the most goes first"
    world.sched.run_due()
    assert fresh in core.peering.pending and held[0] not in core.peering.pending
    newest = socket_from(world, "10.0.0.51")
    assert core.peering.admit_inbound(newest)
    assert held[1].close_reason is not None, "next: the same address's next oldest"
    assert fresh.close_reason is None, "a handshake younger than timeout/10 is never evicted"
    for link in (socket_from(world, "10.0.0.52"), socket_from(world, "10.0.0.53")):
        core.peering.admit_inbound(link)
    assert fresh.close_reason is None and newest.close_reason is None


def test_heap_trim_during_a_connection_burst_and_once_after_it() -> None:
    from netdiag.node.resources import HeapTrimmer, malloc_trim

    t = HeapTrimmer(after_conns=100)
    t.accepted = 50
    assert not t.due()  # a few connections: nothing to give back
    assert not t.due()  # and never for a small burst, even once it is over
    t.accepted = 400
    assert t.due()  # a flood: trimmed while it goes on
    t.accepted = 450
    assert not t.due()  # 50 more: not yet
    assert t.due()  # none since the last check: the burst is over, its tail trimmed
    assert not t.due()  # and only once
    assert t.trims == 2
    assert isinstance(malloc_trim(), bool)


def test_heap_trim_when_the_heaps_hold_much_more_free_memory_than_after_the_last_trim() -> None:
    from netdiag.node.resources import HeapTrimmer, MiB

    free = [2 * MiB]
    t = HeapTrimmer(after_conns=100, after_free=8 * MiB, free_bytes=lambda: free[0])
    assert not t.due()  # no connections, little free
    free[0] = 12 * MiB  # a burst of API or gossip work freed 10 MiB: no connection counted it
    assert t.due()
    t.trimmed(7 * MiB)  # the trim could not give back 7 MiB (fragments between live blocks)
    free[0] = 9 * MiB
    assert not t.due()  # those fragments alone never trigger it again
    free[0] = 3 * MiB  # reused...
    assert not t.due()
    free[0] = 12 * MiB  # ...and freed again: 9 MiB above the floor it fell to
    assert t.due()
    assert t.trims == 2


def test_malloc_free_bytes_reads_glibc_or_says_none() -> None:
    from netdiag.node.resources import malloc_free_bytes, trim_heap

    free = malloc_free_bytes()
    assert free is None or free >= 0
    after = trim_heap()
    assert (after is None) == (free is None)
