"""A real kill -9 while a process commits blocks: nothing committed is lost, no gap, no
half-written block; the node's start-up verification passes and the chain keeps extending."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.unit.node.chainkit import Clock, lab, open_chain

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("mode", ["extend", "reorg", "extend-wb", "reorg-wb"])
def test_kill_9_during_commits_loses_nothing(tmp_path: Path, mode: str) -> None:
    rng = random.Random(1234)
    reported = 0
    for _round in range(5):
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.unit.node.crash_writer", str(tmp_path), mode],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.strip().isdigit(), f"writer did not start: {first!r}"
        time.sleep(rng.uniform(0.05, 0.4))  # kill at an arbitrary point mid-stream
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        heights = [int(x) for x in [first, *out.split()] if x.strip()]
        reported = max(reported, *heights)
        assert proc.returncode == -signal.SIGKILL

        spec, _ = lab(validators=3, epoch=7)
        chain = open_chain(tmp_path, spec, Clock())  # runs Store.verify(): gaps, links, hashes
        assert chain.height >= reported, "a block reported committed was lost"
        assert chain.store.verify(depth=chain.height + 1) == chain.height
        total = 0
        for h in range(1, chain.height + 1):
            b = chain.store.block_at(h)
            assert b is not None and len(b.txs) in ((20,) if mode.startswith("extend") else (0, 20))
            assert all(chain.store.has_tx(t.txid()) for t in b.txs)
            total += len(b.txs)
        assert chain.store.tx_count() == total  # no half-written block or reorg
        chain.store.close()
    assert reported > 5
