"""tcp_resets, tcp_connects and tcp_life on real kernel TCP (loopback, a port of their own):
each event the test causes is counted exactly once, with the right peer, direction and
bytes. Counts and presence only — never times."""

from __future__ import annotations

import os
import socket
import struct
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from netdiag.trace import engine, manifest
from netdiag.trace.pipeline import Pipeline, age_stage

PORT = 5317
CLOSED_PORT = 5318  # nothing listens here: connecting draws a reset


def _session(name: str, port: int = PORT) -> engine.Session:
    p = manifest.load(name)
    avail = manifest.availability(p)
    if not avail.ok:
        pytest.skip(f"{name} needs {'; '.join(avail.missing)} (absent on this kernel)")
    return engine.Session(p, engine.defines_for(p, (port,), False))


def _rows(s: engine.Session) -> list[dict[str, Any]]:
    p = Pipeline(s, [age_stage(lambda: s.attached_ns)])
    return p.step().snap.rows


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    lst = socket.socket()
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind(("127.0.0.1", PORT))
    lst.listen(16)
    yield lst
    lst.close()


def _refused(n: int) -> None:
    for _ in range(n):
        with socket.socket() as s, pytest.raises(ConnectionRefusedError):
            s.connect(("127.0.0.1", CLOSED_PORT))


def test_resets_sent_and_received_are_counted_per_peer(listener: socket.socket) -> None:
    with _session("tcp_resets", CLOSED_PORT) as rs, _session("tcp_resets", PORT) as ra:
        _refused(3)
        # an abortive close (SO_LINGER 0) of an established connection resets it
        c = socket.create_connection(("127.0.0.1", PORT))
        srv, _ = listener.accept()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
        with pytest.raises(ConnectionResetError):
            srv.recv(10)
        srv.close()
        refused, aborted = _rows(rs), _rows(ra)
    by = {(r["direction"], r["port"], r["side"]): r for r in refused}
    # keyed by the service port, not by the client's ephemeral ports: one row per direction
    assert len(refused) == 2, refused
    sent, got = by[("sent", CLOSED_PORT, "local")], by[("received", CLOSED_PORT, "peer")]
    # to a closed port: no socket (state -), the peer is the connecting client
    assert (sent["count"], sent["state"], sent["raddr"]) == (3, "-", "127.0.0.1")
    assert got["count"] == 3
    # tcp_close() moves the socket to CLOSE before it sends the abortive reset
    ab = {(r["direction"], r["side"]): (r["count"], r["state"], r["port"]) for r in aborted}
    assert ab == {("sent", "peer"): (1, "CLOSE", PORT), ("received", "local"): (1, "-", PORT)}


def test_connects_active_passive_failed_and_latency_samples(listener: socket.socket) -> None:
    n = 4
    with _session("tcp_connects", PORT) as s, _session("tcp_connects", CLOSED_PORT) as f:
        for _ in range(n):
            c = socket.create_connection(("127.0.0.1", PORT))
            srv, _ = listener.accept()
            c.sendall(b"x")  # a first segment on the accepted socket: its handshake RTT
            assert srv.recv(1) == b"x"
            srv.close()
            c.close()
        _refused(1)
        rows, failed = _rows(s), _rows(f)
    active = [r for r in rows if r["direction"] == "active"]
    passive = [r for r in rows if r["direction"] == "passive"]
    assert len(active) == 1 and len(passive) == 1, rows
    a, p = active[0], passive[0]
    assert (a["opens"], a["established"], a["failed"], a["lat_samples"]) == (n, n, 0, n)
    assert a["port"] == PORT and a["raddr"] == "127.0.0.1" and a["pid"] == os.getpid()
    assert a["comm"]  # the test runner's command name
    assert (p["opens"], p["established"], p["lat_samples"]) == (n, n, n)
    assert a["lat_min_us"] <= a["lat_p50_us"] <= a["lat_max_us"]
    [fr] = [r for r in failed if r["direction"] == "active"]
    assert (fr["opens"], fr["established"], fr["failed"]) == (1, 0, 1)


def test_life_rows_carry_owner_bytes_and_close_state(listener: socket.socket) -> None:
    sent, reply = 300_000, 12_345
    old = socket.create_connection(("127.0.0.1", PORT))  # opened before the probe
    old_srv, _ = listener.accept()
    try:
        with _session("tcp_life", 0) as s:  # no port filter: the old socket has a row too
            old.sendall(b"o" * 10)
            assert old_srv.recv(10)
            c = socket.create_connection(("127.0.0.1", PORT))
            srv, _ = listener.accept()
            got = [0]

            def serve() -> None:
                while b := srv.recv(1 << 16):
                    got[0] += len(b)
                srv.sendall(b"r" * reply)
                srv.close()

            t = threading.Thread(target=serve)
            t.start()
            c.sendall(b"s" * sent)
            c.shutdown(socket.SHUT_WR)
            back = 0
            while b := c.recv(1 << 16):
                back += len(b)
            t.join()
            cport = c.getsockname()[1]
            c.close()
            rows = _rows(s)
    finally:
        old.close()
        old_srv.close()
    assert got[0] == sent and back == reply
    by = {(r["lport"], r["rport"]): r for r in rows if r["lport"] is not None}
    cli, srv_row = by[(cport, PORT)], by[(PORT, cport)]
    assert cli["origin"] == "active" and srv_row["origin"] == "passive"
    assert (cli["bytes_sent"], cli["bytes_received"]) == (sent, reply)
    assert (srv_row["bytes_sent"], srv_row["bytes_received"]) == (reply, sent)
    assert cli["pid"] == os.getpid() and srv_row["pid"] == os.getpid()
    assert cli["close_state"] in ("FIN_WAIT2", "CLOSING", "LAST_ACK", "FIN_WAIT1")
    assert srv_row["close_state"] == "LAST_ACK" and cli["age_exact"] is True
    # the connection older than the probe: its bytes from now on, its age a lower bound
    olds = [r for r in rows if r["bytes_sent"] == 10 or r["bytes_received"] == 10]
    assert olds and all(r["age_exact"] is False for r in olds)
