"""Lab kernel tests run with a private state directory, so `lab down --all` here never touches
labs that other users of this host have up."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import missing_tool


@pytest.fixture(autouse=True)
def lab_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "state"
    monkeypatch.setenv("NETDIAG_STATE", str(root))
    yield root


@pytest.fixture
def lab_name() -> str:
    return f"t{secrets.token_hex(3)}"


@pytest.fixture
def need_iperf3() -> None:
    reason = missing_tool("iperf3", "ping", "gcc")
    if reason:
        pytest.skip(reason)
