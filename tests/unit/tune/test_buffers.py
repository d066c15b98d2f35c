from __future__ import annotations

import pytest

from netdiag.errors import InputError
from netdiag.tune import buffers


@pytest.mark.parametrize(
    ("text", "bps"),
    [("100mbit", 100_000_000), ("1gbit", 10**9), ("2.5G", 2_500_000_000), ("64000", 64000)],
)
def test_parse_rate(text: str, bps: int) -> None:
    assert buffers.parse_rate_bps(text) == bps


@pytest.mark.parametrize(("text", "n"), [("16m", 16 << 20), ("25MB", 25 << 20), ("4096", 4096)])
def test_parse_size(text: str, n: int) -> None:
    assert buffers.parse_size_bytes(text) == n


@pytest.mark.parametrize(
    ("text", "us"), [("100ms", 100_000), ("1.5s", 1_500_000), ("250us", 250), ("40", 40_000)]
)
def test_parse_duration(text: str, us: int) -> None:
    assert buffers.parse_duration_us(text) == us


@pytest.mark.parametrize("bad", ["fast", "-3mbit", ""])
def test_bad_rate_says_how(bad: str) -> None:
    with pytest.raises(InputError) as e:
        buffers.parse_rate_bps(bad)
    assert e.value.fix and "mbit" in e.value.fix


def test_bdp_of_the_bench_link() -> None:
    # 100 Mbit/s × 100 ms = 1.25 MB
    assert buffers.bdp_bytes(100_000_000, 100_000) == 1_250_000


def test_max_is_twice_bdp_rounded_to_pow2() -> None:
    bp = buffers.plan_max(12_500_000, live_max=4 << 20, tcp_mem_max_pages=10**6, page_size=4096)
    assert bp.max_bytes == 32 << 20  # 2 × 12.5 MB = 25 MB -> 32 MiB
    assert "2 × BDP" in bp.rule and "32.0 MiB" in bp.rule


def test_never_lowers_a_live_max() -> None:
    bp = buffers.plan_max(1000, live_max=64 << 20, tcp_mem_max_pages=10**6, page_size=4096)
    assert bp.max_bytes == 64 << 20


def test_bounded_by_tcp_memory() -> None:
    # tcp_mem[2] = 16384 pages × 4 KiB = 64 MiB; one socket gets at most 1/8 = 8 MiB
    bp = buffers.plan_max(100 << 20, live_max=4 << 20, tcp_mem_max_pages=16384, page_size=4096)
    assert bp.max_bytes == 8 << 20
    assert "exceeds the memory bound" in bp.rule
