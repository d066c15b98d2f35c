"""bench p2p's pure parts: seeded topologies and bounds, figures, the node wire client."""

from __future__ import annotations

import hashlib

import msgspec
import pytest

from netdiag import nodeapi
from netdiag.bench import p2p_stats, p2p_topology
from netdiag.errors import InputError


@pytest.mark.parametrize("shape", p2p_topology.SHAPES)
def test_topology_is_seeded_connected_and_bounded(shape: str) -> None:
    g1 = p2p_topology.build(16, shape, 4, seed=3, keep_connected_without=("n16", "n15"))
    g2 = p2p_topology.build(16, shape, 4, seed=3, keep_connected_without=("n16", "n15"))
    g3 = p2p_topology.build(16, shape, 4, seed=4, keep_connected_without=("n16", "n15"))
    assert g1 == g2 and g1 != g3
    assert g1.connected() and g1.connected(frozenset({"n16", "n15"}))
    assert all(0.005 <= rtt <= 0.2 for _, _, rtt in g1.edges)
    if shape == "regular":
        assert all(len(g1.neighbours(n)) == 4 for n in g1.nodes)


def test_shortest_path_bound_is_half_the_rtt_along_the_cheapest_path() -> None:
    g = p2p_topology.ClusterGraph(
        ("a", "b", "c"), (("a", "b", 0.010), ("b", "c", 0.010), ("a", "c", 0.050))
    )
    lat = g.one_way_s()
    assert lat["a"]["c"] == pytest.approx(0.010)  # via b: 5 ms + 5 ms, not the 25 ms direct
    assert p2p_stats.lower_bounds_us(lat, "a", "c") == pytest.approx(10_000)
    assert g.one_way_s(frozenset({"b"}))["a"]["c"] == pytest.approx(0.025)
    _, hops = g.paths()
    assert hops["a"]["c"] == 2 and hops["a"]["b"] == 1 and hops["a"]["a"] == 0
    assert g.paths(frozenset({"b"}))[1]["a"]["c"] == 1


def test_store_and_forward_bound_pays_serialisation_on_every_hop() -> None:
    g = p2p_topology.ClusterGraph(
        ("a", "b", "c"), (("a", "b", 0.010), ("b", "c", 0.010), ("a", "c", 0.030))
    )
    # a small message goes via b (5 + 5 ms); at 8 ms per hop of serialisation the direct
    # link (15 + 8 ms) beats two hops (2 x (5 + 8) ms): fewer relays, fewer copies
    assert g.paths(per_hop_s=0.001)[0]["a"]["c"] == pytest.approx(0.012)
    lat, hops = g.paths(per_hop_s=0.008)
    assert lat["a"]["c"] == pytest.approx(0.023) and hops["a"]["c"] == 1


def test_impossible_topologies_are_input_errors() -> None:
    with pytest.raises(InputError, match="n x d must be even"):
        p2p_topology.build(5, "regular", 3, seed=1)
    with pytest.raises(InputError, match="unknown"):
        p2p_topology.build(5, "torus", 2, seed=1)


def test_propagation_summary() -> None:
    rows = [
        {
            "variant": "bbr",
            "kind": "block",
            "msg": str(m),
            "node": f"n{i}",
            "delay_us": None if (m, i) == (0, 0) else 1000.0 * (i + 1),
            "lower_bound_us": 500.0 * (i + 1),
            "sf_bound_us": 800.0 * (i + 1),
            "hops": i + 1,
            "duplicates": i,
        }
        for m in range(2)
        for i in range(4)
    ]
    (s,) = p2p_stats.propagation_summary(rows, "bbr")
    assert s["messages"] == 2 and s["arrivals"] == 8
    assert s["delivery_ratio"] == pytest.approx(7 / 8)
    assert s["max_ms"] == 4.0 and s["p50_ms"] == 3.0
    assert s["p99_over_bound"] == pytest.approx(4.0 / 2.0)
    assert s["sf_bound_p99_ms"] == pytest.approx(3.2)
    assert s["p99_over_sf_bound"] == pytest.approx(4.0 / 3.2)
    assert s["duplicates_per_msg"] == pytest.approx(1.5)
    # (delay - bound) / hops = 0.5 ms for every arrival
    assert s["excess_per_hop_p50_ms"] == s["excess_per_hop_p99_ms"] == pytest.approx(0.5)
    assert p2p_stats.propagation_summary(rows, "cubic") == []


def test_transport_summary_uses_per_socket_deltas() -> None:
    def s(t: float, cookie: int, acked: int, retrans: int) -> dict[str, object]:
        return {
            "variant": "bbr",
            "t_s": t,
            "node": "n1",
            "sock_cookie": cookie,
            "bytes_acked": acked,
            "retrans_total": retrans,
            "srtt_us": 40_000,
            "cwnd_segs": 10,
            "min_rtt_us": 20_000,
            "delivery_rate_bps": 8_000_000,
        }

    rows = [s(0, 1, 1000, 2), s(1, 1, 6000, 5), s(0, 2, 0, 0), s(1, 2, 5000, 0)]
    out = p2p_stats.transport_summary(rows, "bbr", duration_s=2.0)
    assert out["throughput_bps"] == (5000 + 5000) * 8 / 2.0
    assert out["retrans_segs"] == 3
    assert out["bdp_p50_bytes"] == pytest.approx(0.02 * 1_000_000)


def test_metrics_parsing_and_label_sums() -> None:
    text = (
        "# TYPE netdiag_node_validation_seconds histogram\n"
        'netdiag_node_validation_seconds_sum{kind="block"} 0.5\n'
        'netdiag_node_validation_seconds_count{kind="block"} 10.0\n'
        'netdiag_node_validation_seconds_sum{kind="tx"} 0.01\n'
    )
    m = nodeapi.parse_metrics(text)
    assert nodeapi.metric_sum(m, "netdiag_node_validation_seconds_sum", kind="block") == 0.5
    assert nodeapi.metric_sum(m, "netdiag_node_validation_seconds_sum") == pytest.approx(0.51)


def test_signed_tx_and_id_follow_the_documented_encoding() -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    signer = nodeapi.TxSigner(b"seed")
    body, txid = signer.next_tx(b"\x01\x02", timestamp_ms=1234)
    enc = msgspec.msgpack.Encoder()
    fields = (bytes.fromhex(body["sender"]), 0, 1234, b"\x01\x02")
    to = (bytes.fromhex(body["to"]), 0)  # a transfer of nothing (the load key is unfunded)
    Ed25519PublicKey.from_public_bytes(fields[0]).verify(
        bytes.fromhex(body["signature"]), nodeapi.TX_DOMAIN + enc.encode((*fields, *to))
    )
    sig = bytes.fromhex(body["signature"])
    assert txid == hashlib.sha256(enc.encode((*fields, sig, *to))).hexdigest()
    assert signer.next_tx(b"")[0]["nonce"] == 1


def test_client_encoding_matches_the_node() -> None:
    from netdiag.node import model  # the node's own encoder, to keep the client honest

    signer = nodeapi.TxSigner(b"x")
    body, txid = signer.next_tx(b"hello", timestamp_ms=99)
    tx = model.Tx(
        bytes.fromhex(body["sender"]),
        0,
        99,
        b"hello",
        bytes.fromhex(body["signature"]),
        bytes.fromhex(body["to"]),
        body["amount"],
    )
    assert tx.txid().hex() == txid
    assert tx.signing_bytes().startswith(nodeapi.TX_DOMAIN)
    for reveal, mix in ((b"", b""), (b"\x05" * 32, b"\x06" * 32)):  # without/with entropy
        header = model.BlockHeader(
            1, "net", 5, b"\x01" * 32, 77, b"\x02" * 32, b"\x03" * 32, 1, reveal, mix, b"\x07" * 32
        )
        block = model.Block(header, header.compute_hash(), b"\x04" * 64, [tx])
        as_json = {
            "height": 5,
            "prev_hash": "01" * 32,
            "timestamp_ms": 77,
            "producer": "02" * 32,
            "tx_root": "03" * 32,
            "reveal": reveal.hex(),
            "mix": mix.hex(),
            "state_root": "07" * 32,
            "hash": header.compute_hash().hex(),
            "signature": "04" * 64,
            "txs": [body],
        }
        want = hashlib.sha256(block.encode()).hexdigest()
        assert nodeapi.block_message_id(as_json, "net") == want


def test_first_seen_from_an_age_is_placed_mid_round_trip() -> None:
    from netdiag.bench.p2p_driver import _first_seen

    t, dups, err = _first_seen({"first_seen_age_s": 0.5, "duplicates": 3}, 10.0, 10.2)
    assert t == pytest.approx(9.6) and dups == 3 and err == pytest.approx(0.1)
    exact = {"first_seen_age_s": 0.5, "first_seen_monotonic_ns": 7_000_000_000}
    assert _first_seen(exact, 10.0, 10.2) == (7.0, 0, 0.0)  # the absolute field wins


def test_byzantine_forger_is_a_validator_next_to_the_late_joiner() -> None:
    from netdiag.bench.p2p import P2PBench, P2PParams

    for seed in (1, 2, 3):
        bench = P2PBench(P2PParams(nodes=12, degree=4, seed=seed, byzantine=True))
        try:
            assert bench.forger in bench.validators
            assert bench.forger in bench.graph.neighbours(bench.late_joiner)
        finally:
            bench.pool.shutdown()


def test_lab_topology_is_built_as_data_from_the_graph() -> None:
    g = p2p_topology.build(8, "regular", 3, seed=2, keep_connected_without=("n08", "n07"))
    prof = p2p_topology.PROFILES["lossy-wan"]
    topo = p2p_topology.to_lab(g, "p2pt", prof, seed=2)
    assert [n.name for n in topo.nodes] == list(g.nodes)
    assert len({n.address for n in topo.nodes}) == len(g.nodes)
    assert [(ln.a, ln.b, ln.shape.delay_s) for ln in topo.links] == list(g.edges)
    assert {(ln.shape.rate_bps, ln.shape.loss) for ln in topo.links} == {(prof.rate_bps, prof.loss)}
    with pytest.raises(InputError):  # the lab's validator still judges it
        p2p_topology.to_lab(g, "Not A Lab Name", prof, seed=2)
