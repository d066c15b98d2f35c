"""Child process for the crash tests: commit blocks (or reorganise) as fast as possible and
print each new height only after the commit returned."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tests.unit.node.chainkit import Clock, branch, lab, next_block, open_chain, txs


def main(data_dir: str, mode: str) -> None:
    spec, keys = lab(validators=3, epoch=7)
    clock = Clock()
    chain = open_chain(Path(data_dir), spec, clock)
    clock.ms = chain.tip.header.timestamp_ms
    n = 0
    base = int.from_bytes(os.urandom(5), "big") * 1_000_000  # unique txs across restarts
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
        print(chain.height, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "extend")
