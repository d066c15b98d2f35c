"""Rotation: a validator publishes at once for every future round the schedule gives it.

One validator is restarted with the node's lab-only hook ``debug_produce_future_rounds`` (see
netdiag/node/debug_rotation.py); the share of the blocks it gets into the chain is counted
from an honest node's /block. A node that takes a block's round from its own clock keeps the
cheater near its fair share (1/N); one that trusts the block's timestamp does not.
"""

from __future__ import annotations

import time

from netdiag.bench.attack.base import AttackContext, Outcome
from netdiag.bench.attack.cluster import http_json

HOOK_ENV = {"NETDIAG_NODE_DEBUG_PRODUCE_FUTURE_ROUNDS": "true"}


class FutureRounds:
    name = "future_rounds"
    summary = "a validator produces for future rounds it owns: its share stays near 1/N"
    rss_bound: float | None = None
    growth_bound: float | None = None
    leaves_cluster_degraded = True  # a defended cluster bans the cheater for ban_seconds

    def run(self, ctx: AttackContext) -> Outcome:
        nodes = ctx.cluster.nodes
        cheater = nodes[-1]  # not the target: RSS and heights are read on an honest node
        honest = nodes[ctx.target_index]
        st = cheater.status()
        if st is None:
            return Outcome(error="cheater's API did not answer before the attack")
        cheater_id = st["node_id"]
        cheater.stop()
        cheater.start(HOOK_ENV)
        ctx.progress(f"validator {cheater.index} restarted with the future-rounds hook")
        deadline = time.monotonic() + 30
        while cheater.status() is None and time.monotonic() < deadline:
            if not cheater.alive():
                text = cheater.log_since(max(0, cheater.log_size() - 800))
                cheater.start()
                return Outcome(error=f"the node refused the lab hook: {text.strip()[-160:]}")
            time.sleep(0.2)
        start_h = honest.height() or 0
        time.sleep(ctx.duration_s)
        end_h = honest.height() or start_h
        produced: dict[str, int] = {}
        for h in range(start_h + 1, end_h + 1):
            b = http_json(honest.api_port, f"/block/{h}")
            if isinstance(b, dict):
                produced[b["producer"]] = produced.get(b["producer"], 0) + 1
        cheater.stop()
        cheater.start()  # back to an honest validator for the attacks after this one
        total = sum(produced.values())
        mine = produced.get(cheater_id, 0)
        share = mine / total if total else None
        fair = 1 / len(nodes)
        banned = any(cheater_id in (n.status() or {}).get("banned_peers", []) for n in nodes[:-1])
        defended = share is not None and share <= fair + 0.2
        return Outcome(
            banned=banned,
            defended=defended,
            why=f"cheater produced {mine} of {total} blocks"
            + (f" ({share:.0%}, fair share {fair:.0%})" if share is not None else ""),
            figures={
                "blocks": total,
                "cheater_blocks": mine,
                "cheater_share": round(share, 3) if share is not None else None,
                "fair_share": round(fair, 3),
            },
        )


ATTACK = FutureRounds()
