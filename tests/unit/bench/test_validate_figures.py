"""bench validate's derived figures (pure functions)."""

from __future__ import annotations

import pytest

from netdiag.bench import validate


def test_per_core_ratio_separates_a_busy_host_from_a_pool_that_does_not_scale() -> None:
    # 2 workers got 1.1 cores and ran 1.1x one core's rate, which had 1 core: scales
    assert validate.per_core_ratio(1100, 1.1, 1000, 1.0) == pytest.approx(1.0)
    # 2 full cores, the same rate as one: the pool does not scale
    assert validate.per_core_ratio(1000, 2.0, 1000, 1.0) == pytest.approx(0.5)
    assert validate.per_core_ratio(1000, 0.0, 1000, 1.0) == 0.0  # share unknown: no figure
