from __future__ import annotations

import re

import pytest

from netdiag.errors import InputError
from netdiag.tune import buffers, profiles


def test_the_documented_profiles_exist() -> None:
    assert {"p2p-wan", "datacenter", "lossy-edge"} <= set(profiles.names())


@pytest.mark.parametrize("name", profiles.names())
def test_every_value_has_a_reason(name: str) -> None:
    p = profiles.load(name)
    assert p.description
    assert p.cc is not None and re.fullmatch(r"[a-z0-9_]+", p.cc.value) and len(p.cc.reason) > 20
    for key, s in p.sysctls.items():
        assert re.fullmatch(r"[a-z0-9_]+(\.[a-z0-9_]+)+", key)
        assert s.value and len(s.reason) > 20, key
    assert p.buffers_rtt and p.buffers_rate and p.buffers_reason
    assert (
        buffers.bdp_bytes(
            buffers.parse_rate_bps(p.buffers_rate), buffers.parse_duration_us(p.buffers_rtt)
        )
        > 0
    )


def test_unknown_profile_lists_the_known_ones() -> None:
    with pytest.raises(InputError) as e:
        profiles.load("warp-drive")
    assert "p2p-wan" in str(e.value.fix)


def test_value_without_reason_is_rejected() -> None:
    with pytest.raises(InputError, match="malformed"):
        profiles.parse("x", {"description": "d", "sysctl": {"net.core.somaxconn": {"value": 1}}})
