"""`netdiag node genesis`: CSPRNG keys written 0600 and never overwritten; lab keys only
behind an explicit --lab-seed, reproducible from it."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from netdiag.node.crypto import load_identity
from tests.cli import run_main

Cap = pytest.CaptureFixture[str]


def run(capsys: Cap, *args: str) -> tuple[int, str]:
    return run_main(capsys, "node", "genesis", *args)


def test_new_network_keys_are_random_private_and_never_overwritten(
    tmp_path: Path, capsys: Cap
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        code, text = run(
            capsys, "--validators", "2", "--network-id", "net1", "--out", str(out), "--json"
        )
        assert code == 0, text
    doc = json.loads(genesis_json := (a / "genesis.json").read_text())
    assert doc["network_id"] == "net1" and len(doc["validators"]) == 2
    for i in range(2):
        key = a / f"validator-{i}.key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert load_identity(key).node_id.hex() == doc["validators"][i]
    # same options, different keys: nothing derives them
    assert json.loads((b / "genesis.json").read_text())["validators"] != doc["validators"]
    before = (a / "validator-0.key").read_bytes()
    code, text = run(capsys, "--validators", "2", "--network-id", "net1", "--out", str(a))
    assert code == 2 and "never overwritten" in text
    assert (a / "validator-0.key").read_bytes() == before
    assert (a / "genesis.json").read_text() == genesis_json


def test_lab_seed_is_explicit_and_reproducible(tmp_path: Path, capsys: Cap) -> None:
    code, text = run(capsys, "--validators", "1", "--out", str(tmp_path / "x"))
    assert code == 2 and "--network-id" in text and not (tmp_path / "x").exists()
    code, text = run(capsys, "--validators", "1", "--seed", "s", "--out", str(tmp_path / "y"))
    assert code == 2  # the old implicit seed option is gone
    hashes = set()
    for out in ("l1", "l2"):
        code, text = run(
            capsys, "--validators", "3", "--lab-seed", "s", "--out", str(tmp_path / out), "--json"
        )
        assert code == 0, text
        hashes.add(json.loads(text)["genesis_hash"])
        assert json.loads(text)["lab_keys"] is True
    assert len(hashes) == 1
