"""A 16-node cluster forms from one bootstrap through Kademlia discovery (real TCP, TLS and
SQLite on loopback). Each node listens on its own 127.0.N.1 — one /24 per node, so the Sybil
limits do not hold honest nodes back — and dials from it. Asserted: every node ends with at
least min(k, N-1) routing-table entries that it connected to or verified, the peer graph is
connected, `/peers/table` shows the table, and a restarted node finds the network from its
persisted table with no bootstrap. No timing thresholds beyond one generous overall timeout."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from netdiag.node.daemon import Node
from tests.unit.node.nodekit import node_cfg, running, wait_for, write_lab_genesis

pytestmark = pytest.mark.e2e

N = 16


def connected(nodes: list[Node]) -> bool:
    by_id = {n.node_id: n for n in nodes}
    seen, todo = {nodes[0].node_id}, [nodes[0]]
    while todo:
        for pid in todo.pop().conns:
            if pid in by_id and pid not in seen:
                seen.add(pid)
                todo.append(by_id[pid])
    return len(seen) == len(nodes)


def cfg(tmp: Path, i: int, gen: Path, **kw: Any) -> Any:
    return node_cfg(
        tmp,
        f"n{i}",
        gen,
        listen=f"127.0.{i + 1}.1:0",
        discovery=True,
        kad_refresh_s=10.0,
        log_level="info",
        **kw,
    )


async def test_sixteen_nodes_find_each_other_from_one_bootstrap(tmp_path: Path) -> None:
    gen, _, _ = write_lab_genesis(tmp_path)
    k = min(20, N - 1)
    async with AsyncExitStack() as stack:
        boot, _ = await stack.enter_async_context(running(cfg(tmp_path, 0, gen)))
        boot_addr = f"127.0.1.1:{boot.listen_port}"
        nodes = [boot]
        for i in range(1, N - 1):
            node, _ = await stack.enter_async_context(
                running(cfg(tmp_path, i, gen, peers=[boot_addr]))
            )
            nodes.append(node)
        last = Node(cfg(tmp_path, N - 1, gen, peers=[boot_addr]), boot.log)
        await last.start()  # stopped and restarted below, so not in the exit stack
        stack.push_async_callback(lambda: stop_once(last))
        nodes.append(last)

        def formed() -> bool:
            return all(len(n.core.discovery.table) >= k for n in nodes) and connected(nodes)

        await wait_for(formed, timeout=240.0, what=f"every node holds >= {k} table entries")
        for n in nodes:
            table = n.core.discovery.table
            assert n.node_id not in table
            hosts = {e.contact.host for e in table.entries()}
            assert len(hosts) == len(table), "one entry per node, each at its own address"
            assert n.core.peering.outbound_count() <= n.cfg.max_outbound
        # nodes other than the bootstrap got peers beyond it from their tables
        assert all(len(n.conns) >= 2 for n in nodes[1:])
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{nodes[3].api_port}/peers/table") as r:
                doc = await r.json()
            async with http.get(f"http://127.0.0.1:{nodes[3].api_port}/peers") as r:
                peers = await r.json()
            async with http.get(f"http://127.0.0.1:{nodes[3].api_port}/metrics") as r:
                metrics = await r.text()
        assert doc["size"] >= k and len(doc["entries"]) == doc["size"]
        row = doc["entries"][0]
        assert {"peer_id", "address", "bucket", "distance", "last_seen_s"} <= set(row)
        assert (
            0 <= row["bucket"] <= 255 and int(row["distance"], 16).bit_length() == row["bucket"] + 1
        )
        assert any(p["bucket"] is not None for p in peers)
        assert "netdiag_node_kad_table_entries" in metrics
        assert "netdiag_node_kad_lookup_hops_bucket" in metrics

        # a restart needs no bootstrap: the table comes back from the store
        before = {e.contact.node_id for e in last.core.discovery.table.entries()}
        await stop_once(last)
        again = Node(cfg(tmp_path, N - 1, gen), boot.log)  # no --peer this time
        await again.start()
        stack.push_async_callback(lambda: stop_once(again))
        restored = {e.contact.node_id for e in again.core.discovery.table.entries()}
        assert restored == before
        await wait_for(
            lambda: again.core.peering.outbound_count() >= 2,
            timeout=60.0,
            what="the restarted node dials peers from its stored table",
        )


async def stop_once(node: Node) -> None:
    if not getattr(node, "_stopped_in_test", False):
        node._stopped_in_test = True  # type: ignore[attr-defined]
        await node.stop()
