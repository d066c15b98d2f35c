"""`netdiag bench p2p --target` end to end: three nodes started by the test (a lab with
role = "node", each in its own namespace standing in for a host), the bench given only their
API addresses and namespaces in a target file. Seconds long."""

from __future__ import annotations

import contextlib
import secrets
import time
from pathlib import Path

import pytest

from netdiag.lab import Lab
from netdiag.lab.cluster import API_PORT
from netdiag.report import results
from tests.cli import run_netdiag
from tests.conftest import missing_root
from tests.labkit import node_cluster


def _wait_cluster(lab: Lab, names: list[str]) -> None:
    deadline = time.monotonic() + 90  # a progress timeout, not a figure
    while time.monotonic() < deadline:
        assert lab.crashed() == [], [(s.node, s.tail()) for s in lab.crashed()]
        with contextlib.suppress(OSError):
            st = [lab.node_api(n, "/status") for n in names]
            if all(int(s["peers"]) >= 1 and int(s["height"]) >= 1 for s in st):
                return
        time.sleep(0.5)
    pytest.fail("the lab cluster did not form")


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.skipif(missing_root() is not None, reason=missing_root() or "")
def test_target_mode_loads_and_follows_a_cluster_it_did_not_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the lab's work dir (genesis, node stores, logs) goes with the test, not into the host's
    # /var/lib/netdiag/labs, where every run left one behind
    monkeypatch.setenv("NETDIAG_STATE", str(tmp_path / "state"))
    name = f"tg{secrets.token_hex(3)}"
    names = ["n0", "n1", "n2"]
    with Lab.up(node_cluster(name, (("n0", "n1"), ("n1", "n2")))) as lab:
        _wait_cluster(lab, names)
        target = tmp_path / "target.toml"
        target.write_text(
            "".join(
                f'[[node]]\nname = "{n}"\napi = "http://{lab.addr(n)}:{API_PORT}"\n'
                f'netns = "{lab.ns(n)}"\n'
                for n in names
            )
        )
        out = tmp_path / "target.json"
        p = run_netdiag(
            *("bench", "p2p", "--target", str(target), "--duration", "5", "--tx-rate", "10"),
            *("--out", str(out), "--json"),
            timeout=180,
        )
        assert p.returncode == 0, p.stderr[-2000:]
        # the bench started nothing and stopped nothing: the cluster runs on
        assert lab.crashed() == []
        assert all(int(lab.node_api(n, "/status")["peers"]) >= 1 for n in names)
    doc = results.load(out)  # validates the schema
    meta = doc["metadata"]
    assert meta["variants"] == ["deployed"] and meta["link_engine"] == "deployed"
    nodes = meta["target"]["nodes"]
    assert [n["name"] for n in nodes] == names and all(n["api_rtt_ms"] for n in nodes)
    # offered vs planned vs accepted, with the shortfall accounted for
    (load,) = doc["raw"]["loads"]
    assert load["txs_planned"] == 50
    assert load["txs_offered"] + load["txs_shed"] == 50
    assert 0 < load["txs_sent"] <= load["txs_offered"]
    # every block produced during the load reached both other nodes, timed by the age the
    # nodes report (no shared clock assumed: each arrival carries a non-zero error bound)
    prop = [r for r in doc["raw"]["propagation"] if r["kind"] == "block"]
    assert prop, "no block was followed"
    for r in prop:
        assert r["delay_us"] is not None, f"block {r['msg']} never reached {r['node']}"
        assert r["error_us"] > 0 and r["lower_bound_us"] is None
    blocks = {r["msg"] for r in prop}
    assert len(prop) == 2 * len(blocks)  # each block: its two non-origin nodes
    summary = {r["kind"]: r for r in doc["summary"]["propagation"]}
    assert summary["block"]["delivery_ratio"] == 1.0
    assert summary["block"]["time_error_p99_ms"] > 0
    assert "transport" not in doc["raw"]  # not this host's sockets to see
    (chain,) = doc["raw"]["chain"]
    assert chain["nodes"] == 3
