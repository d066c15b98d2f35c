"""Fault hooks for labs and tests ONLY: ways for a node to misbehave on purpose.

Each is off by default and switched on by a ``debug_*`` config key (or its
``NETDIAG_NODE_DEBUG_*`` environment variable). Never enable them on a node that matters.
"""

from __future__ import annotations

import hashlib

import msgspec

from netdiag.node.model import Block


def forge(b: Block) -> Block:
    """A forgery that still decodes: re-pointed at a made-up parent, re-hashed, and (no
    validator key at hand) signed with zeros — provably invalid to anyone who checks."""
    prev = hashlib.sha256(b"forged" + b.hash).digest()
    hdr = msgspec.structs.replace(b.header, prev_hash=prev)
    return Block(hdr, hdr.compute_hash(), bytes(64), b.txs)
