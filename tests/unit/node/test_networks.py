"""Named networks: the shipped genesis hashes to its pinned hash; any change is refused."""

from __future__ import annotations

import copy

import pytest

from netdiag.node import networks
from netdiag.node.config import load_config
from netdiag.node.errors import ConfigError
from netdiag.node.networks import NETWORKS, NamedNetwork, named_genesis, resolve_genesis


def test_every_shipped_network_matches_its_pin() -> None:
    for name, net in NETWORKS.items():
        spec = named_genesis(name)
        assert spec.network_id == name
        assert spec.block().hash.hex() == net.genesis_hash


def test_a_changed_genesis_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    net = NETWORKS["netdiag-testnet"]
    doc = copy.deepcopy(net.genesis)
    doc["params"]["slot_ms"] = 999  # one consensus parameter
    monkeypatch.setitem(networks.NETWORKS, "netdiag-testnet", NamedNetwork(doc, net.genesis_hash))
    with pytest.raises(ConfigError, match="the package pins"):
        named_genesis("netdiag-testnet")


def test_unknown_name_and_exactly_one_source() -> None:
    with pytest.raises(ConfigError, match="known networks are netdiag-testnet"):
        named_genesis("mainnet")
    with pytest.raises(ConfigError, match="pass --network or --genesis"):
        resolve_genesis("netdiag-testnet", "g.json")
    with pytest.raises(ConfigError, match="--network NAME or --genesis FILE"):
        resolve_genesis("", "")
    cfg = load_config(None, {"NETDIAG_NODE_NETWORK": "netdiag-testnet"}, {"data_dir": "d"})
    assert cfg.network == "netdiag-testnet" and cfg.genesis == ""
    with pytest.raises(ConfigError, match="both --network and --genesis"):
        load_config(None, {}, {"data_dir": "d", "genesis": "g", "network": "netdiag-testnet"})
    with pytest.raises(ConfigError, match="--network NAME"):
        load_config(None, {}, {"data_dir": "d"})
