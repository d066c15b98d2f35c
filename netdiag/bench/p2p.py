"""`netdiag bench p2p`: a node cluster on emulated WAN links, loaded, measured, one result file.

Per variant (congestion control, alternating with the same seed and the same lab):
  1. every namespace's ``net.ipv4.tcp_congestion_control`` is set to the variant;
  2. a fresh genesis (``netdiag node genesis``) and fresh data dirs; validators are all nodes but
     the last two — the late joiner (started only in the sync phase) and the restart victim;
  3. **load**: signed transactions (zero-amount transfers: nodeapi.TxSigner) POSTed at
     ``tx_rate`` round-robin over the nodes while the validators produce a block per slot.
     Each block and every k-th transaction is followed to every node through
     ``/message/{id}`` (first-seen time on the host's one monotonic clock, duplicate count);
     sock_diag samples every peer socket each second, joined to ``/peers``
     by socket cookie;
  4. **sync**: the late joiner starts; the restart victim is killed with SIGKILL, left down for
     ``sync_gap_s`` and restarted; both are polled until ``synchronized``.
The bench talks to nodes only through their process, REST API and wire format (netdiag.nodeapi).

Modules: p2p_driver (parameters, state, the node processes), p2p_load (3, with the faults),
p2p_syncphase (4, chain agreement), p2p_figures (raw rows, summaries), p2p_topology (the
graph, built into a lab Topology as data), p2p_stats (percentiles), p2p_cc (the variants' cc).
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from netdiag.bench import p2p_topology
from netdiag.bench.p2p_cc import check_cc, namespace_cc
from netdiag.bench.p2p_discovery import DiscoveryPhase
from netdiag.bench.p2p_driver import (
    P2PParams,
    Progress,
)
from netdiag.bench.p2p_figures import FigurePhase
from netdiag.bench.p2p_load import LoadPhase
from netdiag.bench.p2p_syncphase import SyncPhase
from netdiag.lab.cluster import (
    P2P_PORT,
    NodeRun,
    make_genesis,
)
from netdiag.report.results import ResultBuilder

__all__ = ["P2PBench", "P2PParams", "Progress"]


class P2PBench(LoadPhase, SyncPhase, FigurePhase, DiscoveryPhase):
    """One bench p2p run: the lab, then per round and variant the phases in order."""

    # -- top level ---------------------------------------------------------------------------
    def run(self) -> ResultBuilder:
        from netdiag.lab import Lab

        check_cc(self.p.cc)  # tune allows it in the namespaces when needed
        profile = self.p.link_profile()
        lab_name = f"p2p{self.p.seed % 1000}{os.getpid() % 10000}"[:16]
        topo = p2p_topology.to_lab(self.graph, lab_name, profile, self.p.seed, self.p.engine)
        work = Path(tempfile.mkdtemp(prefix="netdiag-p2p-", dir=self.work_root))
        self._phase("building lab")
        try:
            with Lab.up(topo) as lab:
                self.lab = lab
                meta = lab.metadata()
                self.result.link_engine = str(meta.get("engine"))
                self.result.metadata.update(
                    lab=meta,
                    topology={
                        "shape": self.p.topology,
                        "degree": self.p.degree,
                        "edges": [list(e) for e in self.graph.edges],
                        # which peers the nodes dialled: the graph's edges, or one bootstrap
                        # and their Kademlia tables (the links shape the traffic either way)
                        "mesh": "discovery" if self.p.discovery else "graph",
                    },
                    roles={
                        "validators": list(self.validators),
                        "late_joiner": self.late_joiner,
                        "restart_victim": self.victim,
                        "forger": self.forger if self.p.byzantine else None,
                    },
                )
                self._apply_lossy_link(lab)
                for rnd in range(1, self.p.rounds + 1):
                    self.round = rnd
                    for variant in self.p.cc:
                        self.run_variant(lab, variant, work / f"{variant}-{rnd}")
                for variant in self.p.cc:
                    self._summarise(variant)
                    self._summarise_discovery(variant)
        finally:
            self.pool.shutdown(wait=True)
            shutil.rmtree(work, ignore_errors=True)
        self.result.metadata["notes"] = self.notes
        return self.result

    def _apply_lossy_link(self, lab: Any) -> None:
        if not self.p.lossy_link:
            return
        spec, _, loss_text = self.p.lossy_link.partition(":")
        a, _, b = spec.partition("-")
        from netdiag.lab.units import loss_fraction

        loss = loss_fraction(loss_text or "5%", "--lossy-link")
        lab.set_link(a, b, loss=loss)
        self._loss_override = {frozenset((a, b)): loss}  # a healed partition restores it
        self.notes.append(f"lossy link {a}-{b}: loss {loss * 100:g}% for the whole run")

    # -- one variant -------------------------------------------------------------------------
    def run_variant(self, lab: Any, variant: str, work: Path) -> None:
        self.progress.variant = variant
        self.progress.txs_sent = 0
        self.progress.txs_offered = 0
        self._phase("congestion control")
        with namespace_cc([lab.ns(n) for n in self.names], variant, self.notes):
            self._variant_in_cc(lab, variant, work)

    def _variant_in_cc(self, lab: Any, variant: str, work: Path) -> None:
        self._phase("genesis")
        gen = make_genesis(work / "genesis", len(self.validators), str(self.p.seed), self.p.slot_ms)
        genesis = gen.path
        producer_of = {k: self.validators[i] for i, k in enumerate(gen.node_ids)}
        runs = {
            n: NodeRun(
                n,
                lab.ns(n),
                work / "data" / n,
                gen.keys[i] if n in self.validators else None,
                [f"{lab.addr(m)}:{P2P_PORT}" for m in self.graph.neighbours(n)],
            )
            for i, n in enumerate(self.names)
        }
        runs[self.late_joiner].in_load = False
        extra = {f"NETDIAG_NODE_{k.upper()}": v for k, v in self.p.node_settings}
        for r in runs.values():
            r.env = r.env | extra
        if self.p.discovery:
            self._bootstrap_peers(lab, runs)
        if self.p.byzantine:
            # LAB ONLY node hook: the forger serves every block it is asked for in a range forged;
            # it is the late joiner's only bootstrap peer, so the joiner's first sync request
            # goes to it (the joiner learns honest peers through the forger's peer exchange)
            forger = runs[self.forger]
            forger.env = forger.env | {"NETDIAG_NODE_DEBUG_FORGE_SYNC_FROM": "1"}
            runs[self.late_joiner].peers = [f"{lab.addr(forger.name)}:{P2P_PORT}"]
        t0 = time.monotonic()
        try:
            self._phase("starting nodes", 30)
            for n, r in runs.items():
                if n != self.late_joiner:
                    self._start(lab, r, genesis)
            self._wait_cluster([r for r in runs.values() if r.in_load], deadline=t0 + 60)
            mesh_s = None
            if self.p.discovery:
                mesh_s = self._wait_mesh([r for r in runs.values() if r.in_load])
            active, load_s = self._load(lab, variant, runs, producer_of, t0)
            if self.p.discovery:
                self._record_discovery(variant, active, mesh_s)
            self._record_round(variant, active, load_s)
            self._check_agreement(variant, active)
            for (v, why), count in sorted(self.skipped.items()):
                if v == variant:
                    self.notes.append(f"{variant}: {count} messages not followed ({why})")
            self._sync(lab, variant, runs, genesis)
        finally:
            self._phase("stopping nodes")
            for r in runs.values():
                self._stop(r)
        for s in lab.crashed():
            if s.proc.returncode not in (-signal.SIGKILL, -signal.SIGTERM, 0):
                self.notes.append(
                    f"{variant}: node {s.node} exited with {s.proc.returncode}: {s.tail(3)}"
                )
