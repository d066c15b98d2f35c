"""Named networks: genesis documents shipped in the package, each with its hash pinned.

``--network NAME`` starts a node on a named network without any genesis file: the document
below is parsed and its block-0 hash compared with the pinned one, so a changed byte (or a
changed consensus parameter or encoding) stops the node instead of silently forking it off.
Validator keys were generated with ``netdiag node genesis`` (OS CSPRNG) and are held by the
network's operators; they are not in this package.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netdiag.node.errors import ConfigError
from netdiag.node.genesis import GenesisSpec, load_genesis, parse_genesis


@dataclass(frozen=True)
class NamedNetwork:
    genesis: dict[str, Any]
    genesis_hash: str  # pinned: hex SHA-256 of block 0


NETWORKS: dict[str, NamedNetwork] = {
    "netdiag-testnet": NamedNetwork(
        genesis={
            "network_id": "netdiag-testnet",
            "timestamp_ms": 1796169600000,  # 2026-12-01T00:00:00Z
            "validators": [
                "f703694c3f73958800228fef759e3c69c2a8437576e0d1b38c0af6d35b20e76c",
                "95996b2bc7160a5e97c65587c4abc396bead832ff82a40969f144a3f9c03f28d",
                "1360cdbc331390f0c8f0fc8d833e7cf884d71ddaa9fdfbd9134ab69a9215daaf",
                "91d70968fa645f8062c927a6cc40abf4e5b834c87b80ff0469fe4bac28722d06",
            ],
            "params": {
                "epoch_length": 100,
                "slot_ms": 1000,
                "max_block_bytes": 1048576,
                "max_block_txs": 2000,
                "max_tx_bytes": 16384,
                "max_future_ms": 5000,
            },
        },
        genesis_hash="57d99d07532bd15d6eec463f954bfecd1dad1a976448cfbbff8eae6c8faf4961",
    ),
}


def named_genesis(name: str) -> GenesisSpec:
    net = NETWORKS.get(name)
    if net is None:
        raise ConfigError(f"unknown network {name!r}: known networks are {', '.join(NETWORKS)}")
    spec = parse_genesis(net.genesis, f"network {name}")
    got = spec.block().hash.hex()
    if got != net.genesis_hash:
        raise ConfigError(
            f"network {name}: genesis hashes to {got[:16]}…, the package pins "
            f"{net.genesis_hash[:16]}… (a consensus rule or encoding changed: re-pin it)"
        )
    return spec


def resolve_genesis(network: str, genesis_file: str) -> GenesisSpec:
    """The genesis of ``--network NAME`` or of ``--genesis FILE`` (exactly one is given)."""
    if network and genesis_file:
        raise ConfigError("both a network and a genesis file given: pass --network or --genesis")
    if network:
        return named_genesis(network)
    if not genesis_file:
        raise ConfigError("no genesis: pass --network NAME or --genesis FILE")
    return load_genesis(Path(genesis_file))
