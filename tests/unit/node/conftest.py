"""Fixtures the node's unit tests share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from netdiag.node.sigpool import SigPool


@pytest.fixture(scope="module")
def pool() -> Iterator[SigPool]:
    """A real 2-worker signature pool (small batches go to it too), one per test module."""
    p = SigPool(workers=2, min_batch=8)
    p.start()
    yield p
    p.close()


@pytest.fixture
def fake_kernel_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    """SIOCOUTQ of test_write_stall's FakeSocket is its ``inflight`` (the kernel's send queue);
    modules over that fake use it with ``pytestmark = pytest.mark.usefixtures(...)``."""
    from netdiag.node import transport as transport_mod
    from tests.unit.node.test_write_stall import fake_queued_bytes

    monkeypatch.setattr(transport_mod, "queued_bytes", fake_queued_bytes)
