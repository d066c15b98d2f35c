"""Child process for the crash tests: commit blocks (or reorganise) as fast as possible and
print each new height only after the commit returned — or, in the ``-wb`` modes, through the
node's writer thread (writer.WriteBehindStore), only once the writer reported it durable."""

from __future__ import annotations

import queue
import sys
import time
from collections.abc import Callable
from pathlib import Path

from netdiag.node.chain import Chain
from netdiag.node.writer import WriteBehindStore
from tests.unit.node.chainkit import Clock, branch, lab, next_block, open_chain, txs

AHEAD = 8  # write-behind: blocks in memory before waiting for the writer


def main(data_dir: str, mode: str) -> None:
    spec, keys = lab(validators=3, epoch=7)
    clock = Clock()
    acks: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
    if mode.endswith("-wb"):
        store = WriteBehindStore(Path(data_dir) / "chain.sqlite", acks.put)
        chain = Chain(store, spec, clock_ms=clock)
        mode = mode.removesuffix("-wb")
    else:
        chain = open_chain(Path(data_dir), spec, clock)
    clock.ms = chain.tip.header.timestamp_ms
    n = 0
    base = time.time_ns()  # nonces above every earlier run's (state.py: nonces only grow)
    while True:
        n += 1
        if mode == "reorg" and chain.height >= 3:
            # replace the top two blocks by a three-block branch: one transaction each time
            theirs = branch(
                chain,
                keys,
                chain.height - 2,
                3,
                round_=1 + n % 3,
                txs_at={chain.height + 1: txs(20, keys[0], start=base + n * 100)},
            )
            clock.ms = theirs[-1].header.timestamp_ms
            res = chain.reorg(theirs, max_depth=64)
            if res.error is not None or not res.adopted:
                raise SystemExit(f"unexpected reorg outcome: {res.error}")
        else:
            b = next_block(chain, keys, txs(20, keys[chain.height % 3], start=base + n * 100))
            clock.ms = b.header.timestamp_ms
            res2 = chain.submit(b)
            if res2.error is not None:
                raise SystemExit(f"unexpected rejection: {res2.error}")
        height = chain.height
        chain.store.after_durable(lambda height=height: print(height, flush=True))  # type: ignore[misc]
        while chain.store.pending_blocks > AHEAD or not acks.empty():
            acks.get()()  # the loop's part: the writer's "durable" events, in order


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "extend")
