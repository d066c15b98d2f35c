"""Protocol versions: the Hello negotiation (the lower of the two versions is spoken) and the
FindNode listen port (version 2) that a version-1 node, which decodes strictly, never receives;
a version-1 FindNode still decodes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import msgspec
import pytest

from netdiag.node.crypto import Identity
from netdiag.node.kademlia import Contact, kad_id
from netdiag.node.messages import PROTOCOL_VERSION, FindNode
from netdiag.node.protocol import (
    HandshakeComplete,
    MessageReceived,
    PeerProtocol,
    State,
    Violation,
    decode_message,
    encode_frame,
)
from tests.unit.node.corekit import lab
from tests.unit.node.kadkit import NetWorld

NET, GEN = "nd-test", b"\x01" * 32
A, B = Identity.generate(), Identity.generate()


class FindNodeV1(msgspec.Struct, tag_field="t", tag="findnode", forbid_unknown_fields=True):
    """FindNode as a version-1 node declares it (strict: an unknown field is refused)."""

    req_id: int
    target: Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]


def handshake(va: int, vb: int) -> tuple[PeerProtocol, PeerProtocol]:
    a, b = PeerProtocol(A, NET, GEN, version=va), PeerProtocol(B, NET, GEN, version=vb)
    a.start()
    b.start()
    for _ in range(3):
        b.receive_data(a.data_to_send())
        a.receive_data(b.data_to_send())
    return a, b


def test_the_lower_version_is_spoken() -> None:
    a, b = handshake(PROTOCOL_VERSION, PROTOCOL_VERSION)
    assert a.state is b.state is State.OPEN
    assert a.version == b.version == PROTOCOL_VERSION
    a, b = handshake(PROTOCOL_VERSION, 1)  # a version-1 peer: still connected
    assert a.state is b.state is State.OPEN
    assert a.version == b.version == 1
    a, b = handshake(PROTOCOL_VERSION, PROTOCOL_VERSION + 5)  # a newer peer speaks ours
    assert a.state is State.OPEN and a.version == PROTOCOL_VERSION


def test_a_version_below_the_minimum_is_refused() -> None:
    a, b = handshake(PROTOCOL_VERSION, 0)
    assert a.state is not State.OPEN and b.state is not State.OPEN


def test_a_version_1_findnode_decodes_with_no_listen_port() -> None:
    target = kad_id(b"x")
    old = msgspec.msgpack.encode(FindNodeV1(7, target))
    msg = decode_message(old)
    assert msg == FindNode(7, target, 0)
    # and a FindNode without a listen port is the version-1 message byte for byte
    assert msgspec.msgpack.encode(FindNode(7, target)) == old


def test_a_version_1_peer_gets_findnode_it_can_decode(tmp_path: Path) -> None:
    spec, _ = lab(1)
    world = NetWorld(tmp_path, spec)
    me = world.peer("me", "10.0.0.1")
    old = world.attach(me, host="10.0.9.1")
    old.version = 1  # the Hello negotiation's result with a version-1 node
    new = world.attach(me, host="10.0.8.1")
    world.run(1.0)
    for link in (old, new):
        assert link.peer_id is not None
        me.discovery.net.rpc(
            Contact(link.peer_id, link.remote_host, 7600),
            FindNode(0, kad_id(b"t")),
            "find",
            lambda res: None,
        )
    world.run(0.1)
    (to_old,) = [m for m in old.sent if isinstance(m, FindNode)]
    (to_new,) = [m for m in new.sent if isinstance(m, FindNode)]
    assert to_new.listen_port == 7600
    strict = msgspec.msgpack.Decoder(FindNodeV1)
    strict.decode(encode_frame(to_old)[4:])  # a version-1 node accepts it
    with pytest.raises(msgspec.ValidationError):  # why it is never sent to a version-1 node
        strict.decode(encode_frame(to_new)[4:])


def test_findnode_between_version_1_and_2_over_the_protocol() -> None:
    a, b = handshake(PROTOCOL_VERSION, 1)
    a.send(FindNode(3, kad_id(b"y")))  # a version-2 sender without a listen port
    evs = b.receive_data(a.data_to_send())
    assert [type(e) for e in evs] == [MessageReceived]
    assert not any(isinstance(e, Violation | HandshakeComplete) for e in evs)
