"""A 16-node cluster forms from one bootstrap in a lab: one `netdiag node run` per namespace,
real TCP and TLS over the lab's links (a 3-regular graph, 10 ms links, userspace or kernel
engine), every node told only the bootstrap's address. Each node has its own /24 so the
eclipse limits stay on, as on a real network. Asserted, with wait-for-condition budgets only:
every node reaches its outbound target of peers, every table holds every other node (each one
proven by a handshake at its address), each node's lookups were answered by nodes beyond the
bootstrap, and the nodes' outbound peers beyond the bootstrap were dialled from their tables."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from netdiag.bench import p2p_topology
from netdiag.lab import Lab
from netdiag.lab.cluster import P2P_PORT, NodeRun, make_genesis, node_env, tail
from netdiag.lab.topology import LinkShape, LinkSpec, NodeSpec, Topology
from netdiag.nodeapi import NodeUnavailable
from tests.conftest import missing_root
from tests.kernel.lab.helpers import leftovers

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(missing_root() is not None, reason=missing_root() or ""),
]

N = 16
TARGET = 8  # the node's default outbound target
LINK = LinkShape(delay_s=0.010, rate_bps=100_000_000)


def topology(name: str) -> Topology:
    graph = p2p_topology.build(N, "regular", 3, seed=1)
    return Topology(
        name=name,
        # one /24 per node: the per-subnet eclipse limits never mistake two nodes for one operator
        nodes=tuple(NodeSpec(n, (f"10.{i + 1}.0.1/32",)) for i, n in enumerate(graph.nodes)),
        links=tuple(LinkSpec(a, b, LINK) for a, b, _ in graph.edges),
        seed=1,
        source="<tests discovery lab>",
    )


def wait_until(cond: Callable[[], bool], budget_s: float, what: str, lab: Lab) -> None:
    """A progress budget, not a figure: generous, and a crashed node fails at once."""
    deadline = time.monotonic() + budget_s
    while time.monotonic() < deadline:
        crashed = lab.crashed()
        assert not crashed, [(s.node, tail(Path(s.log)) if s.log else "") for s in crashed]
        try:
            if cond():
                return
        except (NodeUnavailable, OSError):
            pass  # an API still starting
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_sixteen_lab_nodes_form_a_cluster_from_one_bootstrap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NETDIAG_STATE", str(tmp_path / "state"))  # never touches others' labs
    name = f"t{secrets.token_hex(3)}"
    gen = make_genesis(tmp_path / "genesis", 1, "discovery-lab")
    with Lab.up(topology(name)) as lab:
        names = [n.name for n in lab.topology.nodes]
        boot = f"{lab.addr(names[0])}:{P2P_PORT}"
        runs = [
            NodeRun(
                n,
                lab.ns(n),
                tmp_path / "nodes" / n,
                key=gen.keys[0] if i == 0 else None,
                peers=[] if i == 0 else [boot],
                discovery=True,
            )
            for i, n in enumerate(names)
        ]
        for r in runs:
            r.data_dir.mkdir(parents=True)
            argv = r.argv(gen.path, lab.addr(r.name), tls=True)
            r.proc = lab.popen(
                r.name, argv, log=tmp_path / f"{r.name}.log", kind="node", env=node_env()
            )
        tables: dict[str, dict[str, Any]] = {}
        peers: dict[str, list[Any]] = {}

        def read() -> None:
            for r in runs:
                tables[r.name] = r.client().get_json("/peers/table")
                peers[r.name] = r.client().peers()

        def beyond_bootstrap(n: str) -> bool:
            """A lookup of n's was answered by more than one node (the bootstrap's answer alone
            could not have filled its table). The join lookup may have found the bootstrap
            alone; the refreshes that follow it run on their own schedule, hence a wait."""
            return any(lk["replies"] >= 2 for lk in tables[n]["recent_lookups"])

        def dialled_from_table(n: str) -> bool:
            """n holds an outbound peer other than the bootstrap — or has nobody left to dial:
            every table entry is already connected (the first joiners are dialled by the rest,
            inbound). Dials run on the maintenance tick, after the table fills, hence a wait."""
            outs = [
                p for p in peers[n] if p.get("direction") == "outbound" and p["address"] != boot
            ]
            connected = {p["peer_id"] for p in peers[n]}
            return bool(outs) or {e["peer_id"] for e in tables[n]["entries"]} <= connected

        def formed() -> bool:
            read()
            return all(
                len(peers[n]) >= TARGET and tables[n]["size"] >= N - 1 and beyond_bootstrap(n)
                for n in names
            ) and all(dialled_from_table(n) for n in names[1:])

        try:
            what = (
                f">= {TARGET} peers, {N - 1} entries, lookups answered beyond the bootstrap "
                "and peers dialled from the table"
            )
            wait_until(formed, 180.0, f"every node with {what}", lab)
        finally:
            for r in runs:
                if r.api is not None:
                    r.api.close()
        own = {lab.addr(n): n for n in names}
        for n in names:
            entries = tables[n]["entries"]
            hosts = {e["address"].rsplit(":", 1)[0] for e in entries}
            assert len(hosts) == len(entries) == N - 1 and own.keys() - hosts == {lab.addr(n)}
            out = [p for p in peers[n] if p.get("direction") == "outbound"]
            assert len(out) <= TARGET + 1, n  # the bootstrap is exempt from the target
        # nodes other than the bootstrap dialled peers found in their tables (or all are theirs)
        assert all(dialled_from_table(n) for n in names[1:])
    assert leftovers(name) == []
