"""The node dials from the one address it listens on (peers can dial it back there and the
per-/24 rules see it), not from a wildcard, and never across families or scopes."""

from __future__ import annotations

from netdiag.node.daemon import dial_source


def test_a_specific_listen_address_is_the_source() -> None:
    assert dial_source("127.77.3.1", "127.77.0.1") == ("127.77.3.1", 0)
    # a lab namespace holding several identities: each dials from its own
    assert dial_source("10.200.0.7", "10.1.0.1") == ("10.200.0.7", 0)


def test_no_source_for_a_wildcard_another_family_or_scope() -> None:
    assert dial_source("0.0.0.0", "10.1.0.1") is None
    assert dial_source("::", "2001:db8::1") is None
    assert dial_source("10.200.0.7", "2001:db8::1") is None
    assert dial_source("127.0.0.1", "10.1.0.1") is None  # loopback cannot reach off the host
    assert dial_source("10.200.0.7", "127.0.0.1") is None
    assert dial_source("node.example", "10.1.0.1") is None  # not an IP literal
