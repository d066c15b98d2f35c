"""--peer-dns: a name's addresses become bootstrap peers and follow the name's answers."""

from __future__ import annotations

import io
import socket
from pathlib import Path

import pytest

from netdiag.node.config import load_config
from netdiag.node.errors import ConfigError
from netdiag.node.logs import NodeLog
from netdiag.node.peer_dns import PeerDns, resolve
from netdiag.node.peers import PeerBook
from tests.unit.node.nodekit import node_cfg, running, wait_for, write_lab_genesis


class Answers:
    """A resolver whose answers the test sets (or makes fail)."""

    def __init__(self) -> None:
        self.by_host: dict[str, list[str] | OSError] = {}

    async def __call__(self, host: str, port: int) -> list[str]:
        a = self.by_host[host]
        if isinstance(a, OSError):
            raise a
        return [f"{ip}:{port}" for ip in a]


def setup(**kw: object) -> tuple[PeerBook, Answers, PeerDns, io.StringIO]:
    cfg = load_config(None, {}, {"data_dir": "d", "genesis": "g", **kw})
    book = PeerBook(cfg, lambda: 100.0)
    out = io.StringIO()
    answers = Answers()
    return book, answers, PeerDns(cfg.peer_dns, book, NodeLog("t", out, "debug"), answers), out


async def test_addresses_follow_the_answer_and_static_peers_stay() -> None:
    book, answers, dns, log = setup(peer_dns=["nodes.svc:7600"], peers=["10.0.0.9:7600"])
    answers.by_host["nodes.svc"] = ["10.0.0.1", "10.0.0.2", "10.0.0.9"]
    await dns.refresh()
    assert set(book.addrs) == {"10.0.0.1:7600", "10.0.0.2:7600", "10.0.0.9:7600"}
    assert all(book.addrs[a].bootstrap for a in book.addrs)
    answers.by_host["nodes.svc"] = ["10.0.0.2", "10.0.0.3"]  # a pod moved to a new address
    await dns.refresh()
    # .1 forgotten, .3 added; .9 is a configured --peer: not ours to forget
    assert set(book.addrs) == {"10.0.0.2:7600", "10.0.0.3:7600", "10.0.0.9:7600"}
    assert "nodes.svc:7600: 2 addresses (+1 -2)" in log.getvalue()


async def test_a_failed_lookup_keeps_the_last_answer_and_ourselves_are_never_added() -> None:
    book, answers, dns, log = setup(peer_dns=["nodes.svc:7600"])
    answers.by_host["nodes.svc"] = ["10.0.0.1", "10.0.0.2"]
    await dns.refresh()
    book.mark_self("10.0.0.2:7600")  # a dial showed this address is us
    answers.by_host["nodes.svc"] = socket.gaierror(-2, "Name or service not known")
    await dns.refresh()
    assert set(book.addrs) == {"10.0.0.1:7600"}
    assert "cannot resolve nodes.svc:7600" in log.getvalue()
    answers.by_host["nodes.svc"] = ["10.0.0.1", "10.0.0.2"]
    await dns.refresh()
    assert set(book.addrs) == {"10.0.0.1:7600"}


async def test_resolve_uses_the_system_resolver() -> None:
    addrs = await resolve("localhost", 7600)
    assert "127.0.0.1:7600" in addrs or "[::1]:7600" in addrs


@pytest.mark.parametrize("bad", ["nodes.svc", "nodes.svc:abc"])
def test_bad_peer_dns_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError, match="not HOST:PORT"):
        load_config(None, {}, {"data_dir": "d", "genesis": "g", "peer_dns": [bad]})


def test_peer_dns_from_the_environment() -> None:
    cfg = load_config(
        None,
        {"NETDIAG_NODE_PEER_DNS": "a.svc:7600, b.svc:7600"},
        {"data_dir": "d", "genesis": "g"},
    )
    assert cfg.peer_dns == ["a.svc:7600", "b.svc:7600"]


async def test_a_node_finds_its_peer_by_name(tmp_path: Path) -> None:
    """Real nodes, real resolver: b knows a only as localhost:PORT."""
    gen, _, _ = write_lab_genesis(tmp_path)
    async with running(node_cfg(tmp_path, "a", gen, tls=False)) as (a, _):
        cfg = node_cfg(
            tmp_path,
            "b",
            gen,
            tls=False,
            peer_dns=[f"localhost:{a.listen_port}"],
            peer_dns_interval_s=0.2,
        )
        async with running(cfg) as (b, _blog):
            await wait_for(lambda: a.node_id in b.conns, what="b dials a by name")
