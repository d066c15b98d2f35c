"""The node's keys at start: its identity (a configured key file, else ``node.key`` in the data
directory, made on first start) and, for a validator, its entropy reveals (entropy.py)."""

from __future__ import annotations

from pathlib import Path

from netdiag.node.config import NodeConfig
from netdiag.node.crypto import Identity, load_identity, save_identity
from netdiag.node.entropy import HashChain, load_secret, secret_path
from netdiag.node.errors import ConfigError
from netdiag.node.genesis import GenesisSpec
from netdiag.node.logs import NodeLog


def load_or_make_identity(cfg: NodeConfig, data_dir: Path) -> Identity:
    if cfg.key:
        return load_identity(Path(cfg.key))
    path = data_dir / "node.key"
    if path.exists():
        return load_identity(path)
    ident = Identity.generate()
    save_identity(ident, path)
    return ident


def load_entropy_chain(
    cfg: NodeConfig, genesis: GenesisSpec, node_id: bytes, log: NodeLog
) -> HashChain | None:
    """A validator's reveals (entropy.py): its secret, checked against its genesis anchor.
    Without one it cannot produce on a network with anchors (said once, at start)."""
    g = genesis
    if not g.entropy_anchors or node_id not in g.validators:
        return None
    path = Path(cfg.entropy_secret) if cfg.entropy_secret else None
    path = path or secret_path(cfg.key)
    if path is None or not path.exists():
        log.warning(
            "no_entropy_secret",
            f"validator without an entropy secret ({path}): it will not produce",
        )
        return None
    try:
        chain = HashChain(load_secret(path), g.entropy_span)
    except (OSError, ValueError) as e:
        raise ConfigError(f"entropy secret {path}: {e}") from e
    if chain.anchor != g.entropy_anchors[g.validators.index(node_id)]:
        raise ConfigError(f"entropy secret {path} does not match our anchor in the genesis")
    return chain
