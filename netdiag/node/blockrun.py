"""Blocks that arrive in a run (a sync answer near the tip): block N+1's signatures go to the
sig pool before block N's are waited for, so block N's other rules (decode, Merkle root,
state, nonces, the commit) run while the workers check N+1's, instead of the pool and the
loop taking turns. The proofs only let ``crypto.verify`` answer at once (``preverified``);
anything not proven is verified inline by the node's rule, as always."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool

import msgspec

from netdiag.node.model import Block, decode_block
from netdiag.node.sigpool import PIPELINED_CHUNK, SigCheck, SigPool, sig_checks

Waiter = Callable[[], list[SigCheck]]


class BlockRun:
    def __init__(self, sigs: SigPool) -> None:
        self.sigs = sigs
        self._next: tuple[bytes, Block, Waiter] | None = None  # sent ahead: raw, block, proofs

    def decoded(self, raw: bytes) -> Block | None:
        """``raw``'s block if it was sent ahead (decoded then)."""
        nxt = self._next
        return nxt[1] if nxt is not None and nxt[0] == raw else None

    def proofs(self, raw: bytes, block: Block) -> Waiter:
        """The proofs of ``block`` (encoded ``raw``): the batch sent ahead for it, or one sent
        now. Call the result to wait for them."""
        nxt, self._next = self._next, None
        if nxt is not None and nxt[0] == raw:
            return nxt[2]
        return self.sigs.prove_soon(sig_checks([block]))

    def send_ahead(self, raw: bytes) -> None:
        """The run's next block to the pool now; a block that does not decode is left for its
        own turn to reject."""
        try:
            block = decode_block(raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        try:
            proofs = self.sigs.prove_soon(sig_checks([block]), PIPELINED_CHUNK)
        except BrokenProcessPool:  # N+1 not sent ahead must not fail block N: its own turn
            return
        self._next = raw, block, proofs
