"""Kernel tier: real BPF, namespaces and sysctls. Every test here needs root."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from netdiag.kernel import netns
from tests.conftest import missing_root


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = missing_root()
    for item in items:
        if "tests/kernel/" in str(item.fspath):
            item.add_marker(pytest.mark.kernel)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def scratch_netns() -> Iterator[str]:
    """A namespace `nd-test-XXXX` that is removed whatever the test does."""
    with netns.scratch("test") as name:
        yield name
