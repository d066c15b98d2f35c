"""Every numeric config key is range-checked: one-line errors naming the key and how to set
it (environment variable or config-file key), instead of a node that starts and misbehaves."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from netdiag.cli.main import main
from netdiag.node.config import RANGES, NodeConfig, load_config
from netdiag.node.errors import ConfigError

BASE = {"data_dir": "d", "genesis": "g"}


@pytest.mark.parametrize(
    ("env", "value", "bound"),
    [
        ("MAX_INBOUND", "-5", ">= 0"),
        ("PEER_BYTES_RATE", "8191", ">= 8192"),
        ("HANDSHAKE_TIMEOUT_S", "-1", "> 0"),
        ("PEER_MSG_RATE", "0", "> 0"),
        ("MAX_VIOLATIONS", "0", ">= 1"),
        ("MAX_FRAME_BYTES", "100", ">= 4096"),
        ("API_HEADER_TIMEOUT_S", "0", "> 0"),
        ("SYNC_BATCH", "0", ">= 1"),
    ],
)
def test_out_of_range_names_the_key(env: str, value: str, bound: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(None, {f"NETDIAG_NODE_{env}": value}, BASE)
    msg = str(e.value)
    assert "\n" not in msg
    assert f"config {env.lower()} = " in msg and f"must be {bound}" in msg
    assert f"NETDIAG_NODE_{env}" in msg


def test_non_finite_and_crossed_bounds() -> None:
    with pytest.raises(ConfigError, match="idle_timeout_s = inf must be a finite number"):
        load_config(None, {"NETDIAG_NODE_IDLE_TIMEOUT_S": "inf"}, BASE)
    with pytest.raises(ConfigError, match="ban_threshold = nan must be a finite"):
        load_config(None, {"NETDIAG_NODE_BAN_THRESHOLD": "nan"}, BASE)
    with pytest.raises(ConfigError, match="target_outbound = 20 exceeds max_outbound = 16"):
        load_config(None, {"NETDIAG_NODE_TARGET_OUTBOUND": "20"}, BASE)
    with pytest.raises(ConfigError, match="log_level = 'loud'"):
        load_config(None, {}, {**BASE, "log_level": "loud"})


def test_defaults_are_in_range_and_every_rule_names_a_real_key() -> None:
    cfg = load_config(None, {}, BASE)
    assert cfg.max_inbound == 64  # defaults pass their own checks
    fields = {f.name for f in msgspec.structs.fields(NodeConfig)}
    assert set(RANGES) <= fields
    # boundaries: 0 inbound is allowed (no inbound peers), -1 means "off" for the hooks
    assert load_config(None, {"NETDIAG_NODE_MAX_INBOUND": "0"}, BASE).max_inbound == 0
    assert load_config(None, {"NETDIAG_NODE_DEBUG_FORGE_SYNC_FROM": "-1"}, BASE)


def test_node_run_refuses_before_touching_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NETDIAG_NODE_PEER_BYTES_RATE", "0")
    data = tmp_path / "data"
    code = main(["node", "run", "--data-dir", str(data), "--genesis", str(tmp_path / "g.json")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("netdiag: error: config peer_bytes_rate = 0 is out of range")
    assert not data.exists()


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"NETDIAG_NODE_WRITE_STALL_TIMEOUT_S": "3e6"}, "write_stall_timeout_s = 3e+06"),
        ({"NETDIAG_NODE_WRITE_STALL_TIMEOUT_S": "0.2"}, "write_stall_timeout_s = 0.2"),
        ({"NETDIAG_NODE_PING_INTERVAL_S": "30"}, "ping_interval_s = 30 must be under half"),
        ({"NETDIAG_NODE_IDLE_TIMEOUT_S": "20"}, "of idle_timeout_s = 20"),
    ],
)
def test_review_2_ranges_say_what_and_how(env: dict[str, str], words: str) -> None:
    # review 2: TCP_USER_TIMEOUT's u32 ms (a huge stall timeout raised in close()), and a ping
    # that cannot answer before the idle timeout
    with pytest.raises(ConfigError) as e:
        load_config(None, env, BASE)
    msg = str(e.value)
    assert "\n" not in msg and words in msg and "NETDIAG_NODE_" in msg, msg


def test_review_2_ranges_accept_the_edges() -> None:
    ok = {
        "NETDIAG_NODE_WRITE_STALL_TIMEOUT_S": "0",  # off
        "NETDIAG_NODE_PEER_BYTES_RATE": "8192",
        "NETDIAG_NODE_PING_INTERVAL_S": "29",
    }
    assert load_config(None, ok, BASE).write_stall_timeout_s == 0
    load_config(None, {"NETDIAG_NODE_WRITE_STALL_TIMEOUT_S": "3600"}, BASE)
