"""The raw sock_diag dump (measure/inetdiag.py) decodes what pyroute2 decodes: on this host's
own sockets (sock_diag of one's own namespace needs no privileges), and on a built message."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import pytest

from netdiag.measure import inetdiag, sockdiag
from netdiag.trace import listeners

EXT = sockdiag.EXT_INFO | sockdiag.EXT_CC_INFO | sockdiag.EXT_CONG | sockdiag.EXT_SKMEMINFO
FAMS = (socket.AF_INET, socket.AF_INET6)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket, socket.socket]]:
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen()
    cli = socket.create_connection(lst.getsockname())
    srv, _ = lst.accept()
    cli.sendall(b"x" * 100_000)
    got = 0
    while got < 100_000:
        got += len(srv.recv(1 << 16))
    yield cli, srv, lst
    for s in (cli, srv, lst):
        s.close()


def _pyroute2(states: int) -> dict[int, sockdiag.TcpConn]:
    from pyroute2 import DiagSocket

    out = {}
    with DiagSocket() as ds:
        ds.bind()
        for fam in FAMS:
            for msg in ds.get_sock_stats(family=fam, states=states, extensions=EXT):
                if msg.get("header", {}).get("type") == 3:
                    continue
                c = sockdiag.conn_from(msg)
                out[c.cookie] = c
    return out


def test_the_raw_dump_reads_what_pyroute2_reads(
    pair: tuple[socket.socket, socket.socket, socket.socket],
) -> None:
    cli, _srv, lst = pair
    cookie = int.from_bytes(cli.getsockopt(socket.SOL_SOCKET, 57, 8), "little")
    raw = {c.cookie: c for c in sockdiag.snapshot(states=0xFFF)}
    ref = _pyroute2(0xFFF)
    assert cookie in raw and cookie in ref
    stable = ("family", "state", "laddr", "lport", "raddr", "rport", "inode", "uid", "cc")
    ours = {k for k, c in raw.items() if lst.getsockname()[1] in (c.lport, c.rport)}
    assert len(ours) == 3  # the listener and both ends
    for k in set(raw) & set(ref):  # other processes' sockets come and go between the dumps
        a, b = raw[k], ref[k]
        if k not in ours and a.state != b.state:
            continue  # ... and change state between them (ESTABLISHED, then TIME_WAIT)
        assert [getattr(a, f) for f in stable] == [getattr(b, f) for f in stable]
        assert a.cgroup_id == b.cgroup_id
        assert (a.info is None) == (b.info is None) and (a.skmem is None) == (b.skmem is None)
    mine, theirs = raw[cookie], ref[cookie]
    assert mine.info is not None and theirs.info is not None
    for f in ("snd_mss", "rcv_mss", "min_rtt_us", "bytes_acked", "bytes_sent", "segs_out"):
        assert getattr(mine.info, f) == getattr(theirs.info, f), f
    assert mine.info.bytes_acked >= 100_000 and mine.lport == cli.getsockname()[1]
    lports = {x.lport for x in listeners._query()}
    assert lst.getsockname()[1] in lports


def test_a_built_reply_decodes_every_field_netdiag_reads() -> None:
    sockid = (1234).to_bytes(2, "big") + (80).to_bytes(2, "big")
    sockid += bytes([10, 0, 0, 1]) + bytes(12) + bytes([10, 0, 0, 2]) + bytes(12)
    sockid += struct.pack("=III", 0, 0x89ABCDEF, 0x1)
    head = struct.pack("=BBBB", socket.AF_INET, 1, 0, 0) + sockid
    head += struct.pack("=IIIII", 0, 5, 7, 1000, 4242)
    info = bytearray(232)
    info[1] = 3  # ca_state Recovery
    info[7] = 1  # delivery_rate_app_limited
    struct.pack_into("=I", info, 8 + 4 * 15, 20_000)  # tcpi_rtt
    struct.pack_into("=Q", info, 120, 123_456)  # tcpi_bytes_acked
    struct.pack_into("=I", info, 148, 19_000)  # tcpi_min_rtt
    struct.pack_into("=I", info, 228, 65_535)  # tcpi_snd_wnd
    bbr = struct.pack("=5I", 1000, 0, 19_000, 256, 512)

    def nla(typ: int, data: bytes) -> bytes:
        return struct.pack("=HH", 4 + len(data), typ) + data + bytes(-len(data) % 4)

    payload = head + nla(2, bytes(info)) + nla(4, b"bbr\0") + nla(16, bbr)
    payload += nla(21, struct.pack("=Q", 77)) + nla(7, struct.pack("=9I", *range(9)))
    c = sockdiag.conn_from(inetdiag.decode(payload))
    assert (c.laddr, c.lport, c.raddr, c.rport) == ("10.0.0.1", 1234, "10.0.0.2", 80)
    assert c.cookie == 0x1_89ABCDEF and c.inode == 4242 and c.uid == 1000
    assert c.state == "ESTABLISHED" and c.cc == "bbr" and c.cgroup_id == 77
    assert c.rqueue == 5 and c.wqueue == 7
    assert c.info is not None and c.info.ca_state == "Recovery"
    assert c.info.rtt_us == 20_000 and c.info.min_rtt_us == 19_000
    assert c.info.bytes_acked == 123_456 and c.info.snd_wnd == 65_535
    assert c.info.delivery_rate_app_limited
    assert c.bbr is not None and c.bbr.bw_bps == 8000 and c.bbr.cwnd_gain == 2.0
    assert c.skmem is not None and c.skmem.drops == 8
    short = inetdiag.tcp_info(bytes(info[:100]))  # an older kernel's shorter tcp_info
    assert short["tcpi_snd_wnd"] == 0 and short["tcpi_ca_state"] == 3
