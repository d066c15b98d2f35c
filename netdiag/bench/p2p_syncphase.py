"""`bench p2p` sync phase: the late joiner starts, the restart victim is killed and restarted;
both are polled until synchronized; chain agreement across the cluster."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from netdiag.bench.p2p_driver import (
    ClusterDriver,
)
from netdiag.lab.cluster import (
    NodeRun,
)
from netdiag.nodeapi import (
    NodeUnavailable,
)


class SyncPhase(ClusterDriver):
    # -- sync phase ----------------------------------------------------------------------------
    def _sync(self, lab: Any, variant: str, runs: dict[str, NodeRun], genesis: Path) -> None:
        """Late joiner from genesis, and the victim restarted after kill -9 and a gap, in parallel.

        A case is done when the node says `synchronized` and is within one block of the
        cluster's height (a fresh node may call itself synchronized before it has met a peer).
        """
        victim, joiner = runs[self.victim], runs[self.late_joiner]
        victim_height = 0
        with contextlib.suppress(NodeUnavailable, TypeError, KeyError):
            victim_height = int(victim.client().get_json("/status")["height"])
        self._phase("sync", self.p.sync_timeout_s)
        if victim.proc is not None:
            victim.proc.kill()  # SIGKILL via Popen: never a reaped, reused pid
            victim.proc.wait(timeout=5)
        if victim.api is not None:
            victim.api.close()
            victim.api = None
        forger_id = None
        if self.p.byzantine:
            with contextlib.suppress(NodeUnavailable, TypeError, KeyError):
                forger_id = str(runs[self.forger].client().get_json("/status")["node_id"])
        t_join = time.monotonic()
        self._start(lab, joiner, genesis)
        restart_at = t_join + self.p.sync_gap_s
        # case -> (node, start height, monotonic start or None while not started)
        cases: dict[str, tuple[NodeRun, int, float | None]] = {
            "late_join": (joiner, 0, t_join),
            "restart": (victim, victim_height, None),
        }
        done: dict[str, tuple[float, int]] = {}
        api_up: dict[str, float] = {}  # process start -> first /status answer: start-up cost
        refs = [
            r
            for r in runs.values()
            if r.name not in (self.victim, self.late_joiner) and self._alive(r)
        ]
        deadline = t_join + self.p.sync_gap_s + self.p.sync_timeout_s
        while len(done) < len(cases) and time.monotonic() < deadline:
            if cases["restart"][2] is None and time.monotonic() >= restart_at:
                self._start(lab, victim, genesis)
                cases["restart"] = (victim, victim_height, time.monotonic())
            target = 0
            for r in refs[:3]:
                with contextlib.suppress(NodeUnavailable, TypeError, KeyError):
                    target = max(target, int(r.client().get_json("/status")["height"]))
            for case, (r, h0, t_start) in cases.items():
                if case in done or t_start is None:
                    continue
                st = None
                with contextlib.suppress(NodeUnavailable):
                    st = r.client().get_json("/status")
                t = time.monotonic() - t_start
                if st is not None:
                    api_up.setdefault(case, t)
                h = int(st["height"]) if st else h0
                synced = bool(st and st.get("synchronized")) and h >= target - 1
                self.result.record(
                    "sync",
                    {
                        "variant": variant,
                        "round": self.round,
                        "case": case,
                        "t_s": round(t, 3),
                        "height": h,
                        "target_height": target,
                        "synchronized": synced,
                    },
                )
                if synced:
                    done[case] = (t, h - h0)
            self.progress.height = target
            self.progress.nodes_up = sum(self._alive(r) for r in runs.values())
            self.report(self.progress)
            time.sleep(0.1)
        if self.p.byzantine:
            self._record_byzantine(variant, joiner, forger_id, "late_join" in done)
        for case in cases:
            got = done.get(case)
            sync_s: float | None = got[0] if got else None
            blocks: int | None = got[1] if got else None
            self.result.record(
                "sync_results",
                {
                    "variant": variant,
                    "round": self.round,
                    "case": case,
                    "sync_s": round(sync_s, 3) if sync_s is not None else None,
                    "blocks": blocks,
                    "blocks_per_s": round(blocks / sync_s, 2) if sync_s and blocks else None,
                    "api_up_s": round(api_up[case], 3) if case in api_up else None,
                    # sync time without the process start-up (interpreter, store open)
                    "sync_after_api_s": round(sync_s - api_up[case], 3)
                    if sync_s is not None and case in api_up
                    else None,
                },
            )
            if case not in done:
                self.notes.append(
                    f"{variant}: {case} did not reach synchronized within "
                    f"{self.p.sync_timeout_s:g} s"
                )

    def _record_byzantine(
        self, variant: str, joiner: NodeRun, forger_id: str | None, synced: bool
    ) -> None:
        """Did the late joiner, whose first peer served it forged blocks, sync and ban it?"""
        st: dict[str, Any] | None = None
        with contextlib.suppress(NodeUnavailable):
            st = joiner.client().get_json("/status")
        banned = list(st.get("banned_peers", [])) if st else []
        row: dict[str, Any] = {
            "variant": variant,
            "round": self.round,
            "forger": self.forger,
            "forger_id": forger_id,
            "joiner_synced": synced,
            "forger_banned_by_joiner": forger_id is not None and forger_id in banned,
            "joiner_bans": len(banned),
        }
        self.result.record("byzantine", row)
        if not row["forger_banned_by_joiner"]:
            self.notes.append(
                f"{variant}{self._rtag()}: the late joiner did not ban the forger {self.forger}"
            )

    def _tips(self, runs: list[NodeRun]) -> tuple[dict[str, int], int, set[str]]:
        """Heights of the live nodes, the lowest, and the distinct blocks they hold there."""
        got = self._each(runs, lambda r: r.client().get_json("/status"))
        heights = {n: int(st["height"]) for n, st in got.items() if st}
        if not heights:
            return {}, 0, set()
        h = min(heights.values())
        blocks = self._each(
            [r for r in runs if r.name in heights], lambda r: r.client().get_json(f"/block/{h}")
        )
        return heights, h, {str(b["hash"]) for b in blocks.values() if b}

    def _check_agreement(self, variant: str, runs: list[NodeRun]) -> None:
        """Do the live nodes hold the same block at the lowest height they all have?

        A split is checked again after a few slots: the node's fork choice may still resolve
        it (transient) — or not (persistent), which the summary counts as a fork.
        """
        heights, h, hashes = self._tips(runs)
        if not heights:
            return
        later = None
        if len(hashes) > 1:
            time.sleep(max(3.0, 3 * self.p.slot_ms / 1000))
            _, h2, hashes2 = self._tips(runs)
            later = len(hashes2) == 1
            self.notes.append(
                f"{variant}{self._rtag()}: {len(hashes)} different blocks at height {h} after "
                f"the load; {'resolved' if later else f'still split at height {h2}'} "
                "a few slots later"
            )
        self.result.record(
            "chain",
            {
                "variant": variant,
                "round": self.round,
                "nodes": len(heights),
                "height_min": h,
                "height_max": max(heights.values()),
                "distinct_blocks": len(hashes),
                "agree": len(hashes) == 1,
                "agree_later": later if later is not None else True,
            },
        )
