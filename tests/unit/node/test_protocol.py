"""Sans-I/O protocol core: framing, typed decoding, handshake acceptance and rejection, fuzz."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netdiag.node.crypto import Identity
from netdiag.node.messages import (
    PROTOCOL_VERSION,
    Auth,
    Blocks,
    GetBlocks,
    Hello,
    Ping,
    Publish,
    Status,
)
from netdiag.node.protocol import (
    LEN,
    FrameDecoder,
    HandshakeComplete,
    MessageReceived,
    PeerClosed,
    PeerProtocol,
    State,
    Violation,
    encode_frame,
)

NET, GEN = "nd-test", b"\x11" * 32
A, B = Identity.generate(), Identity.generate()


def pair(**kw: object) -> tuple[PeerProtocol, PeerProtocol]:
    a = PeerProtocol(A, NET, GEN)
    b = PeerProtocol(B, str(kw.get("net", NET)), bytes(kw.get("gen", GEN)))  # type: ignore[arg-type]
    a.start()
    b.start()
    return a, b


def pump(a: PeerProtocol, b: PeerProtocol, rounds: int = 4) -> tuple[list[object], list[object]]:
    ea: list[object] = []
    eb: list[object] = []
    for _ in range(rounds):
        eb += b.receive_data(a.data_to_send())
        ea += a.receive_data(b.data_to_send())
    return ea, eb


def test_handshake_completes_both_ways_and_carries_messages() -> None:
    a, b = pair()
    ea, eb = pump(a, b)
    assert a.state is b.state is State.OPEN
    assert any(isinstance(e, HandshakeComplete) and e.peer_id == B.node_id for e in ea)
    assert any(isinstance(e, HandshakeComplete) and e.peer_id == A.node_id for e in eb)
    a.send(Status(5, b"\x01" * 32, GEN))
    a.send(Ping(7))
    got = b.receive_data(a.data_to_send())
    assert [type(e.message) for e in got if isinstance(e, MessageReceived)] == [Status, Ping]


def test_inbound_side_that_did_not_start_answers_with_hello() -> None:
    a = PeerProtocol(A, NET, GEN)
    b = PeerProtocol(B, NET, GEN)
    a.start()
    pump(a, b)
    assert a.state is b.state is State.OPEN


@pytest.mark.parametrize(
    ("kw", "reason"),
    [({"net": "other"}, "handshake_network"), ({"gen": b"\x22" * 32}, "handshake_genesis")],
)
def test_handshake_rejects_other_network_or_genesis(kw: dict[str, object], reason: str) -> None:
    a, b = pair(**kw)
    eb = b.receive_data(a.data_to_send())
    assert any(isinstance(e, Violation) and e.reason == reason for e in eb)
    assert b.state is State.CLOSED
    b.close(f"protocol violation: {reason}")  # what the transport does
    ea = a.receive_data(b.data_to_send())
    # a learns why it was rejected: b's Hello already shows the mismatch, or b's bye says so
    assert any(isinstance(e, Violation) and e.reason == reason for e in ea) or any(
        isinstance(e, PeerClosed) and reason in e.reason for e in ea
    )
    assert a.state is not State.OPEN


def _hello(node_id: bytes, nonce: bytes = b"\x05" * 32, version: int = PROTOCOL_VERSION) -> Hello:
    return Hello(NET, GEN, version, node_id, nonce, 0)


def test_handshake_rejects_wrong_version_self_and_bad_format() -> None:
    for hello, reason in [
        (_hello(B.node_id, version=0), "handshake_version"),
        (_hello(A.node_id), "handshake_self"),
        (_hello(b"short"), "handshake_format"),
    ]:
        a = PeerProtocol(A, NET, GEN)
        a.start()
        (ev,) = a.receive_data(encode_frame(hello))
        assert isinstance(ev, Violation) and ev.reason == reason, ev


def test_impostor_cannot_claim_another_key() -> None:
    a = PeerProtocol(A, NET, GEN)
    a.start()
    a.receive_data(encode_frame(_hello(B.node_id)))  # claims B's id
    mallory = Identity.generate()
    (ev,) = a.receive_data(encode_frame(Auth(mallory.sign(b"anything"))))
    assert isinstance(ev, Violation) and ev.reason == "handshake_auth"
    assert a.state is State.CLOSED


def test_replayed_auth_from_another_connection_is_rejected() -> None:
    # Record B's Auth on a first connection, then replay it against a fresh one.
    a1, b1 = pair()
    b1.receive_data(a1.data_to_send())
    recorded = b1.data_to_send()  # Hello + Auth of B for a1's nonce
    a2 = PeerProtocol(A, NET, GEN)
    a2.start()
    events = a2.receive_data(recorded)
    assert any(isinstance(e, Violation) and e.reason == "handshake_auth" for e in events)


def test_hello_after_handshake_and_messages_before_it_are_violations() -> None:
    a, b = pair()
    pump(a, b)
    (ev,) = a.receive_data(encode_frame(_hello(B.node_id)))
    assert isinstance(ev, Violation) and ev.reason == "handshake_replay"
    c = PeerProtocol(A, NET, GEN)
    (ev,) = c.receive_data(encode_frame(Ping(1)))
    assert isinstance(ev, Violation) and ev.reason == "handshake_order"


def test_disconnect_is_reported() -> None:
    a, b = pair()
    pump(a, b)
    b.close("shutting down")
    (ev,) = a.receive_data(b.data_to_send())
    assert ev == PeerClosed("shutting down")
    a.close("bye back")
    assert a.data_to_send() == b""  # no bye in answer to a bye


def test_oversized_length_prefix_rejected_from_four_bytes() -> None:
    d = FrameDecoder(max_frame=1024)
    v = d.feed(LEN.pack(1025))
    assert isinstance(v, Violation) and v.reason == "frame_too_large"
    assert FrameDecoder(1024).feed(LEN.pack(1024)) == []  # legal size, waits for the body


def test_truncated_frame_waits_then_completes() -> None:
    frame = encode_frame(Ping(3))
    d = FrameDecoder()
    assert d.feed(frame[:-1]) == [] and d.buffered == len(frame) - 1
    assert d.feed(frame[-1:]) == [frame[4:]]


def test_wrong_types_and_unknown_fields_are_schema_violations() -> None:
    a, b = pair()
    pump(a, b)
    bad = [
        msgspec.msgpack.encode({"t": "ping", "nonce": "seven"}),
        msgspec.msgpack.encode({"t": "ping", "nonce": 1, "extra": 2}),
        msgspec.msgpack.encode({"t": "nosuch"}),
        msgspec.msgpack.encode([1, 2, 3]),
        msgspec.msgpack.encode({"t": "getblocks", "req_id": 1, "start": 1}),
    ]
    for body in bad:
        a2, b2 = pair()
        pump(a2, b2)
        (ev,) = a2.receive_data(LEN.pack(len(body)) + body)
        assert isinstance(ev, Violation) and ev.reason == "schema", body


# -- fuzzing ------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=20))
def test_decoder_never_raises_on_garbage(chunks: list[bytes]) -> None:
    d = FrameDecoder(max_frame=256)
    for c in chunks:
        out = d.feed(c)
        if isinstance(out, Violation):
            break
        assert all(0 < len(f) <= 256 for f in out)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512), st.booleans())
def test_protocol_never_raises_on_garbage(data: bytes, handshaken: bool) -> None:
    a, b = pair()
    if handshaken:
        pump(a, b)
    events = a.receive_data(data)
    assert all(
        isinstance(e, Violation | MessageReceived | PeerClosed | HandshakeComplete) for e in events
    )
    if any(isinstance(e, Violation) for e in events):
        assert a.state is State.CLOSED and a.receive_data(data) == []


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.text(max_size=8)
    | st.binary(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
tags = st.sampled_from(
    [
        "hello",
        "auth",
        "ping",
        "status",
        "getblocks",
        "blocks",
        "pub",
        "ihave",
        "iwant",
        "graft",
        "prune",
        "bye",
        "peers",
        "x",
    ]
)


@settings(max_examples=300, deadline=None)
@given(tags, st.dictionaries(st.text(max_size=10), msgpack_values, max_size=5))
def test_valid_frames_with_invalid_content_never_raise(tag: str, fields: dict[str, object]) -> None:
    a, b = pair()
    pump(a, b)
    body = msgspec.msgpack.encode({"t": tag, **fields})
    for ev in a.receive_data(LEN.pack(len(body)) + body):
        assert isinstance(ev, Violation | MessageReceived | PeerClosed)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=30))
def test_any_chunking_delivers_the_same_messages(cuts: list[int]) -> None:
    a, b = pair()
    pump(a, b)
    msgs = [Publish("txs", b"x" * 50), GetBlocks(1, 2, 3), Blocks(1, [b"a", b"bb"]), Ping(9)]
    for m in msgs:
        a.send(m)
    stream = a.data_to_send()
    got: list[object] = []
    pos = 0
    i = 0
    while pos < len(stream):
        n = cuts[i % len(cuts)]
        got += [
            e.message
            for e in b.receive_data(stream[pos : pos + n])
            if isinstance(e, MessageReceived)
        ]
        pos += n
        i += 1
    assert got == msgs


def test_rejected_peer_is_told_why() -> None:
    a = PeerProtocol(A, NET, GEN)
    a.start()
    a.data_to_send()
    (ev,) = a.receive_data(encode_frame(_hello(B.node_id, version=0)))
    assert isinstance(ev, Violation)
    a.close(f"protocol violation: {ev.reason}")
    c = PeerProtocol(B, NET, GEN)
    c.start()
    evs = c.receive_data(a.data_to_send())
    assert evs == [PeerClosed("protocol violation: handshake_version")]


def test_large_frames_are_refused_until_authenticated() -> None:
    a = PeerProtocol(A, NET, GEN, max_frame=1 << 20)
    a.start()
    (ev,) = a.receive_data(LEN.pack(5000))
    assert isinstance(ev, Violation) and ev.reason == "frame_too_large"
    a2, b2 = pair()
    pump(a2, b2)
    big = Publish("txs", b"x" * 100_000)
    a2.send(big)
    got = b2.receive_data(a2.data_to_send())
    assert [e.message for e in got if isinstance(e, MessageReceived)] == [big]


hellos = st.builds(
    Hello,
    network_id=st.sampled_from([NET, "other", ""]),
    genesis_hash=st.sampled_from([GEN, b"", b"\x00" * 32]),
    version=st.integers(-2, 3),
    node_id=st.sampled_from([B.node_id, A.node_id, b"", b"\x01" * 32]) | st.binary(max_size=40),
    nonce=st.binary(max_size=40),
    listen_port=st.integers(-1, 70000),
    agent=st.text(max_size=10),
)


@settings(max_examples=300, deadline=None)
@given(hellos, st.binary(max_size=80), st.booleans())
def test_fuzzed_handshakes_never_open_without_proof(hello: Hello, sig: bytes, dup: bool) -> None:
    from netdiag.node.messages import Auth

    a = PeerProtocol(A, NET, GEN)
    a.start()
    data = encode_frame(hello) + (encode_frame(hello) if dup else b"") + encode_frame(Auth(sig))
    events = a.receive_data(data)
    assert a.state is not State.OPEN
    assert not any(isinstance(e, HandshakeComplete | MessageReceived) for e in events)


def test_large_frame_right_after_auth_in_the_same_read_is_accepted() -> None:
    """Auth raises the frame cap; a big frame coalesced with it must meet the new cap."""
    c, d = PeerProtocol(A, NET, GEN), PeerProtocol(B, NET, GEN)
    c.start()
    d.start()
    c.receive_data(d.data_to_send())  # d's Hello: c answers with its Auth
    out = c.data_to_send()  # c's Hello, then c's Auth
    (n,) = LEN.unpack_from(out)
    hello, auth = out[: LEN.size + n], out[LEN.size + n :]
    d.receive_data(hello)  # d answers with its Auth
    c.receive_data(d.data_to_send())
    assert c.state is State.OPEN
    c.send(Blocks(1, [b"\x00" * 10_000]))
    events = d.receive_data(auth + c.data_to_send())  # Auth and a 10 kB frame in one read
    assert d.state is State.OPEN, events
    assert not any(isinstance(e, Violation) for e in events), events
    assert any(isinstance(e, MessageReceived) and isinstance(e.message, Blocks) for e in events)
