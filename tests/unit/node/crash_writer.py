"""Child process for the crash test: commit blocks as fast as possible, print each height."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.unit.node.chainkit import Clock, lab, next_block, open_chain, txs


def main(data_dir: str) -> None:
    spec, keys = lab(validators=3, epoch=7)
    clock = Clock()
    chain = open_chain(Path(data_dir), spec, clock)
    clock.ms = chain.tip.header.timestamp_ms
    while True:
        b = next_block(chain, keys, txs(20, keys[chain.height % 3], start=chain.height * 100))
        clock.ms = b.header.timestamp_ms
        res = chain.submit(b)
        if res.error is not None:
            raise SystemExit(f"unexpected rejection: {res.error}")
        print(b.height, flush=True)  # printed only after COMMIT returned


if __name__ == "__main__":
    main(sys.argv[1])
