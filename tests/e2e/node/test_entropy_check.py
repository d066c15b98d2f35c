"""Entropy consensus check: three validators on loopback; one is given a divergent entropy for
epoch 2 (the test hook), with epochs seeded by block hashes and by commit-reveal mixes. It
detects the mismatch at that boundary, stops producing, re-syncs the seed block from the
majority, recomputes, re-checks, and produces again."""

from __future__ import annotations

import io
import json
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from netdiag.node.daemon import Node
from tests.unit.node.nodekit import api, node_cfg, running, wait_for, write_lab_genesis

pytestmark = pytest.mark.e2e
EPOCH = 10


def events(out: io.StringIO, *names: str) -> list[dict[str, object]]:
    recs = [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]
    return [r for r in recs if r.get("event") in names]


@pytest.mark.parametrize("span", [0, 512], ids=["block-hash-seed", "commit-reveal"])
async def test_divergent_entropy_is_detected_halts_production_and_recovers(
    tmp_path: Path, span: int
) -> None:
    gpath, spec, _keys = write_lab_genesis(tmp_path, validators=3, slot_ms=100, entropy_span=span)
    assert bool(spec.entropy_anchors) == bool(span)
    assert spec.params.epoch_length == EPOCH
    async with AsyncExitStack() as stack:
        nodes: list[Node] = []
        outs: list[io.StringIO] = []
        for i in range(3):
            cfg = node_cfg(
                tmp_path,
                f"v{i}",
                gpath,
                key=str(tmp_path / f"validator-{i}.key"),
                peers=[f"127.0.0.1:{n.listen_port}" for n in nodes],
                log_level="info",
                debug_divergent_entropy_epoch=2 if i == 2 else -1,
            )
            node, out = await stack.enter_async_context(running(cfg))
            nodes.append(node)
            outs.append(out)
        a, _b, c = nodes
        out = outs[2]
        await wait_for(lambda: all(len(n.conns) == 2 for n in nodes), 10, "full mesh")

        def recovered() -> bool:
            h = [r["outcome"] for r in c.entropy.history if r["seed_height"] == 2 * EPOCH]
            return "mismatch" in h and h[-1] == "agree"

        await wait_for(recovered, 30, "node C to detect the mismatch at 20 and recover")
        log = events(out, "entropy_check", "entropy_resync", "block_produced", "entropy_divergent")
        names = [(e["event"], e.get("outcome"), e.get("seed_height")) for e in log]
        i_bad = names.index(("entropy_check", "mismatch", 20))
        i_fix = next(
            i
            for i, n in enumerate(names)
            if n[0] == "entropy_check" and n[1] == "agree" and i > i_bad
        )
        assert ("entropy_divergent", None, 20) in names[:i_bad]
        between = log[i_bad + 1 : i_fix]
        assert [e["event"] for e in between if e["event"] != "block_produced"] == ["entropy_resync"]
        assert "matches our chain; our entropy for it was wrong" in str(between[-1]["msg"])
        assert not [e for e in between if e["event"] == "block_produced"], "produced while halted"
        bad = log[i_bad]
        assert bad["disagree"] == 2 and bad["agree"] == 1  # both honest peers outvoted it
        assert "producing stopped" in str(bad["msg"])
        # The first boundary (10) agreed before the divergence; the honest nodes kept agreeing
        # at 20 (2 of 3 votes: the divergent node is outvoted, not followed).
        assert any(r["seed_height"] == EPOCH and r["outcome"] == "agree" for r in c.entropy.history)
        assert all(
            r["outcome"] == "agree" for r in a.entropy.history if r["seed_height"] == 2 * EPOCH
        ), list(a.entropy.history)
        _, st = await api(c, "/status")
        ec = st["entropy_check"]
        assert ec["outcomes"]["mismatch"] >= 1 and ec["outcomes"]["agree"] >= 2
        assert ec["votes"]["disagree"] >= 2 and ec["timeout_ms"] == 300
        _, metrics = await api(c, "/metrics")
        assert 'netdiag_node_entropy_checks_total{outcome="mismatch"} 1.0' in metrics
        # ... and it produces again: a block of its own after the recovery.
        produced_before = c.metrics.blocks_produced._value.get()
        await wait_for(
            lambda: c.metrics.blocks_produced._value.get() > produced_before,
            20,
            "node C to produce again",
        )
        assert not c.entropy.halted
        await wait_for(
            lambda: (
                len({n.chain.store.hash_at(30) for n in nodes if n.chain}) == 1
                and all(n.height >= 30 for n in nodes)
            ),
            20,
            "all three to agree on block 30",
        )
