"""Named networks: genesis documents shipped in the package, each with its hash pinned.

``--network NAME`` starts a node on a named network without any genesis file: the document
below is parsed and its block-0 hash compared with the pinned one, so a changed byte (or a
changed consensus parameter or encoding) stops the node instead of silently forking it off.
Validator keys and entropy secrets were generated with ``netdiag node genesis`` (OS CSPRNG)
and are held by the network's operators; they are not in this package — only the public keys
and the entropy anchors (entropy.py) are.
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
                "b79c5806e267b0d4d2cb68685329d5f004f48171263e7f97e74ad28a89f45e07",
                "fe707b9220c51a2f6e994319d9ddbc7d31243bb6ab4ba56d22118ec8eddf4612",
                "5e99ef68f13cfd7cc60a3bb46808230ff7bd5b0e2940f336fa6044014af00445",
                "5b011ebbc77a6d90ccd653cde022bd10386facbf4aee1627f94374c1bfb66481",
            ],
            "params": {
                "epoch_length": 100,
                "slot_ms": 1000,
                "max_block_bytes": 1048576,
                "max_block_txs": 2000,
                "max_tx_bytes": 16384,
                "max_future_ms": 5000,
            },
            "entropy_anchors": [
                "5831b89b081ea9a4e5f369a38075772eba03ac87887a514a8f9fbc9d1770cced",
                "7cf59385134f3d0e315693c57caf75d305e9bf91d3c4e34f90b5339a1b542221",
                "142db18cf6e3ce70ad5c3c27ee565aeaee6d10ba93be707182323bf6696c8e64",
                "bd796309e03f60b6cde4c86ef28afc9b3e243c7ca220874e464f33d090e22aac",
            ],
            "entropy_span": 1048576,
        },
        genesis_hash="132e950dd252b9798b2df4b750d8923ab194ac8322c833482292af9150b8567b",
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
