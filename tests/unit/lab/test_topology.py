from __future__ import annotations

import pytest

from netdiag.errors import InputError
from netdiag.lab import topology
from netdiag.lab.topology import LinkShape, parse, routes, two_node

GOOD = """\
name = "wan"
seed = 7

[defaults]
delay = "50ms"
rate = "100mbit"

[[nodes]]
name = "a"
command = "sleep 100"

[[nodes]]
name = "b"
addresses = ["10.9.0.2/32"]

[[nodes]]
name = "c"
role = "node"

[[links]]
a = "a"
b = "b"
loss = "1%"
queue = "2bdp"

[[links]]
a = "b"
b = "c"
delay = "10ms"
jitter = "1ms"
queue = 50
"""


def test_parse_good() -> None:
    t = parse(GOOD, "wan.toml")
    assert t.name == "wan" and t.seed == 7 and t.engine == "auto"
    assert [n.name for n in t.nodes] == ["a", "b", "c"]
    assert t.node("b").address == "10.9.0.2"
    assert t.node("a").address == "10.0.0.1"  # default, by index
    assert t.node("c").role == "node"
    ab, bc = t.links
    assert ab.shape == LinkShape(0.05, 0.0, 100_000_000, 0.01, 0, 2.0)
    assert bc.shape.delay_s == pytest.approx(0.01) and bc.shape.jitter_s == pytest.approx(0.001)
    assert bc.shape.queue_packets() == 50
    # 2 x BDP of 100 Mbit/s x 50 ms = 1.25 MB -> 834 full packets
    assert ab.shape.queue_packets(1500) == 834


def _error(text: str) -> str:
    with pytest.raises(InputError) as e:
        parse(text, "lab.toml")
    assert e.value.fix
    return e.value.what


def test_schema_error_names_key_path_and_line() -> None:
    bad = GOOD.replace("queue = 50", 'queue = "lots"')
    msg = _error(bad)
    assert msg.startswith("lab.toml:31: links[1].queue:"), msg


def test_defaults_error_points_at_defaults() -> None:
    msg = _error(GOOD.replace('rate = "100mbit"', 'rate = "fast"'))
    assert msg.startswith("lab.toml:6: defaults.rate:"), msg


def test_unknown_node_in_link() -> None:
    msg = _error(GOOD.replace('a = "b"\nb = "c"', 'a = "b"\nb = "zz"'))
    assert "links[1].b" in msg and "'zz' is not a node" in msg and msg.startswith("lab.toml:28:")


def test_unknown_key() -> None:
    msg = _error(GOOD.replace("seed = 7", 'seed = 7\ncolour = "red"'))
    assert msg.startswith("lab.toml:3: colour: unknown key"), msg


def test_syntax_error_has_position() -> None:
    msg = _error('name = "x"\n[[nodes]\n')
    assert "line 2" in msg


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (('name = "a"', 'name = "A-bad"'), "nodes[0].name"),
        (('name = "b"', 'name = "a"'), "nodes[1].name"),  # duplicate
        (('name = "b"', 'name = "averyverylongname"'), "nodes[1].name"),  # > 11: ifname limit
        (('role = "node"', 'role = "router"'), "nodes[2].role"),
        (('addresses = ["10.9.0.2/32"]', 'addresses = ["not-an-ip"]'), "nodes[1].addresses"),
        (('name = "wan"', 'name = "has space"'), "name"),
        (('a = "b"\nb = "c"', 'a = "b"\nb = "b"'), "links[1].b"),
        (('a = "b"\nb = "c"', 'a = "b"\nb = "a"'), "links[1]"),  # second link for the pair
        (("queue = 50", 'queue = 50\nkind = "tun"'), "links[1].kind"),
    ],
)
def test_schema_errors(change: tuple[str, str], where: str) -> None:
    assert f": {where}:" in _error(GOOD.replace(*change, 1))


def test_routes_multi_hop() -> None:
    t = parse(GOOD)
    r = routes(t)
    assert r["a"] == {"b": "b", "c": "b"}
    assert r["c"] == {"b": "b", "a": "b"}


def test_two_node() -> None:
    t = two_node(0.05, 100_000_000, 0.01)
    assert len(t.nodes) == 2 and len(t.links) == 1
    assert t.name.startswith("t") and topology.LAB_NAME.match(t.name)
    assert t.links[0].shape.loss == 0.01
    assert two_node(0.05, 0, queue=64).links[0].shape.queue_packets() == 64
    assert t.node("a").address != t.node("b").address


def test_example_topologies_parse() -> None:
    from importlib import resources

    files = [
        p
        for p in resources.files("netdiag.lab").joinpath("examples").iterdir()
        if p.name.endswith(".toml")
    ]
    assert files
    for f in files:
        t = parse(f.read_text(), f.name)
        assert t.nodes


@pytest.mark.parametrize(
    "shape",
    [
        LinkShape(delay_s=0.05, jitter_s=0.001, rate_bps=100_000_000, loss=0.01, queue_bdp=2.0),
        LinkShape(delay_s=0.2, rate_bps=0, loss=0.0, queue_pkts=64),
    ],
)
def test_live_record_reads_back_as_the_same_shape(shape: LinkShape) -> None:
    from netdiag.lab.live import shape_of

    assert shape_of(shape.as_dict(1500)) == shape


def test_link_kind_veth_parses_and_defaults_to_emulated() -> None:
    t = parse(GOOD.replace("queue = 50", 'queue = 50\nkind = "veth"', 1))
    assert [ln.kind for ln in t.links] == ["emulated", "veth"]
    # in [defaults] too: every link a veth pair
    t = parse(GOOD.replace('rate = "100mbit"', 'rate = "100mbit"\nkind = "veth"', 1))
    assert {ln.kind for ln in t.links} == {"veth"}
