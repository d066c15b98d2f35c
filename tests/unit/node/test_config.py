"""Configuration precedence: defaults < TOML file < NETDIAG_NODE_* env < CLI overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from netdiag.node.config import load_config
from netdiag.node.errors import ConfigError


def test_precedence_and_types(tmp_path: Path) -> None:
    f = tmp_path / "node.toml"
    f.write_text(
        'data_dir = "/d"\ngenesis = "/g"\nmax_inbound = 10\nlisten = "127.0.0.1:9"\n'
        'peers = ["127.0.0.1:1"]\n'
    )
    env = {
        "NETDIAG_NODE_MAX_INBOUND": "20",
        "NETDIAG_NODE_TLS": "false",
        "NETDIAG_NODE_PEERS": "127.0.0.1:2, 127.0.0.1:3",
        "HOME": "/x",
    }
    cfg = load_config(f, env, {"listen": "127.0.0.1:7", "tls": None, "peers": []})
    assert cfg.max_inbound == 20 and cfg.tls is False and cfg.listen == "127.0.0.1:7"
    assert cfg.peers == ["127.0.0.1:2", "127.0.0.1:3"] and cfg.data_dir == "/d"
    assert load_config(f, env, {"max_inbound": 5}).max_inbound == 5
    assert load_config(f, {}, {}).max_inbound == 10
    assert load_config(None, {}, {"data_dir": "d", "genesis": "g"}).max_inbound == 64


def test_bad_config_is_explained(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="NETDIAG_NODE_NOSUCH"):
        load_config(None, {"NETDIAG_NODE_NOSUCH": "1"}, {"data_dir": "d", "genesis": "g"})
    with pytest.raises(ConfigError, match="max_inbound"):
        load_config(None, {"NETDIAG_NODE_MAX_INBOUND": "many"}, {"data_dir": "d", "genesis": "g"})
    with pytest.raises(ConfigError, match="HOST:PORT"):
        load_config(None, {}, {"data_dir": "d", "genesis": "g", "listen": "nonsense"})
    with pytest.raises(ConfigError, match="--genesis FILE"):
        load_config(None, {}, {"data_dir": "d"})
    bad = tmp_path / "bad.toml"
    bad.write_text("data_dir = [")
    with pytest.raises(ConfigError, match="not TOML"):
        load_config(bad, {}, {})


def test_gossip_degrees_are_checked() -> None:
    base = {"data_dir": "d", "genesis": "g"}
    assert load_config(None, {"NETDIAG_NODE_GOSSIP_D": "8"}, base).gossip_d == 8
    with pytest.raises(ConfigError, match="gossip degrees"):
        load_config(None, {"NETDIAG_NODE_GOSSIP_D": "20"}, base)
