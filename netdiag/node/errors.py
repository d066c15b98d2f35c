"""The node's own small error hierarchy (netdiag.node imports nothing else of netdiag)."""

from __future__ import annotations


class NodeError(Exception):
    """Base: something the operator must fix (bad config, unreadable key, corrupt store)."""


class ConfigError(NodeError):
    pass


class StoreError(NodeError):
    """The on-disk store is inconsistent or does not belong to this genesis."""


class ValidationError(Exception):
    """A block or transaction broke a rule. ``reason`` is a stable metric label."""

    reason = "invalid"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ProtocolError(Exception):
    """A peer sent something malformed. ``reason`` is a stable metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class HandshakeError(ProtocolError):
    pass
