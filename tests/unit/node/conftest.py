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
