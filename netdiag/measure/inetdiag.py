"""A TCP sock_diag dump over a raw netlink socket: no pyroute2 on the tracer's start-up path.

pyroute2's package import pulls in every netlink family it knows (~170 ms, more on a busy host),
which sat between trace-peers attaching and its first row. This module speaks the one request
netdiag needs — SOCK_DIAG_BY_FAMILY dump of inet_diag_req_v2 for TCP — and decodes the reply
into messages shaped like pyroute2's (`msg["idiag_…"]`, `msg.get_attr("INET_DIAG_…")`, tcp_info
and bbr_info as mappings of their uapi field names), so sockdiag.conn_from reads either.
Layouts are the uapi ones (linux/inet_diag.h, linux/tcp.h): stable ABI; a shorter tcp_info from
an older kernel reads as zeros past its end, like pyroute2 does.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterable, Iterator
from typing import Any

NETLINK_INET_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3

_NLMSG = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_REQ = struct.Struct("=BBBxI")  # family, protocol, ext, pad, states (then the 48-byte sockid)
_MSG = struct.Struct("=BBBB2s2s16s16sIIIIIIII")  # inet_diag_msg (72 bytes)
_NLA = struct.Struct("=HH")

# attribute numbers (enum in linux/inet_diag.h)
ATTRS = {
    2: "INET_DIAG_INFO",
    4: "INET_DIAG_CONG",
    7: "INET_DIAG_SKMEMINFO",
    16: "INET_DIAG_BBRINFO",
    21: "INET_DIAG_CGROUP_ID",
}

# struct tcp_info up to tcpi_snd_wnd (232 bytes; newer kernels append fields we do not read)
_TCPI_HEAD = [
    "state",
    "ca_state",
    "retransmits",
    "probes",
    "backoff",
    "options",
    "wscale",
    "delivery_rate_app_limited",
]
_TCPI_BODY = [
    ("I", "rto ato snd_mss rcv_mss unacked sacked lost retrans fackets last_data_sent "
     "last_ack_sent last_data_recv last_ack_recv pmtu rcv_ssthresh rtt rttvar snd_ssthresh "
     "snd_cwnd advmss reordering rcv_rtt rcv_space total_retrans"),
    ("Q", "pacing_rate max_pacing_rate bytes_acked bytes_received"),
    ("I", "segs_out segs_in notsent_bytes min_rtt data_segs_in data_segs_out"),
    ("Q", "delivery_rate busy_time rwnd_limited sndbuf_limited"),
    ("I", "delivered delivered_ce"),
    ("Q", "bytes_sent bytes_retrans"),
    ("I", "dsack_dups reord_seen rcv_ooopack snd_wnd"),
]  # fmt: skip
_TCPI_FMT = "=8B" + "".join(f"{len(names.split())}{t}" for t, names in _TCPI_BODY)
_TCPI = struct.Struct(_TCPI_FMT)
_TCPI_NAMES = [f"tcpi_{n}" for n in _TCPI_HEAD] + [
    f"tcpi_{n}" for _t, names in _TCPI_BODY for n in names.split()
]
_BBR = struct.Struct("=5I")
_BBR_NAMES = ("bbr_bw_lo", "bbr_bw_hi", "bbr_min_rtt", "bbr_pacing_gain", "bbr_cwnd_gain")


def tcp_info(data: bytes) -> dict[str, int]:
    v = _TCPI.unpack_from(data[: _TCPI.size].ljust(_TCPI.size, b"\0"))
    return dict(zip(_TCPI_NAMES, v, strict=True))


def bbr_info(data: bytes) -> dict[str, int]:
    return dict(zip(_BBR_NAMES, _BBR.unpack_from(data.ljust(_BBR.size, b"\0")), strict=True))


class DiagMsg:
    """One inet_diag_msg with the attributes netdiag reads, pyroute2-style."""

    __slots__ = ("attrs", "fields")

    def __init__(self, fields: dict[str, Any], attrs: dict[str, Any]) -> None:
        self.fields, self.attrs = fields, attrs

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)

    def get_attr(self, name: str) -> Any:
        return self.attrs.get(name)


def _addr(family: int, raw: bytes) -> bytes:
    return raw[:4] if family == socket.AF_INET else raw


def decode(payload: bytes) -> DiagMsg:
    """One SOCK_DIAG_BY_FAMILY reply (without its nlmsghdr)."""
    (fam, state, timer, retrans, sport, dport, src, dst, ifidx, c0, c1, expires, rq, wq, uid,
     inode) = _MSG.unpack_from(payload)  # fmt: skip
    fields = {
        "idiag_family": fam,
        "idiag_state": state,
        "idiag_timer": timer,
        "idiag_retrans": retrans,
        "idiag_sport": int.from_bytes(sport, "big"),
        "idiag_dport": int.from_bytes(dport, "big"),
        "idiag_src": _addr(fam, src),
        "idiag_dst": _addr(fam, dst),
        "idiag_if": ifidx,
        "idiag_cookie": c0 | (c1 << 32),
        "idiag_expires": expires,
        "idiag_rqueue": rq,
        "idiag_wqueue": wq,
        "idiag_uid": uid,
        "idiag_inode": inode,
    }
    attrs: dict[str, Any] = {}
    off = _MSG.size
    while off + _NLA.size <= len(payload):
        ln, typ = _NLA.unpack_from(payload, off)
        if ln < _NLA.size:
            break
        data = payload[off + _NLA.size : off + ln]
        name = ATTRS.get(typ & 0x3FFF)
        if name == "INET_DIAG_INFO":
            attrs[name] = tcp_info(data)
        elif name == "INET_DIAG_BBRINFO":
            attrs[name] = bbr_info(data)
        elif name == "INET_DIAG_CONG":
            attrs[name] = data.split(b"\0", 1)[0].decode(errors="replace")
        elif name == "INET_DIAG_CGROUP_ID" and len(data) >= 8:
            attrs[name] = struct.unpack_from("=Q", data)[0]
        elif name == "INET_DIAG_SKMEMINFO":
            attrs[name] = bytes(data)
        off += (ln + 3) & ~3
    return DiagMsg(fields, attrs)


def _request(family: int, states: int, ext: int, seq: int) -> bytes:
    body = _REQ.pack(family, socket.IPPROTO_TCP, ext & 0xFF, states) + bytes(48)
    return _NLMSG.pack(_NLMSG.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP,
                       seq, 0) + body  # fmt: skip


def _replies(sock: socket.socket, seq: int) -> Iterator[bytes]:
    while True:
        buf = sock.recv(1 << 16)
        if not buf:
            return
        off = 0
        while off + _NLMSG.size <= len(buf):
            ln, typ, _flags, mseq, _pid = _NLMSG.unpack_from(buf, off)
            if ln < _NLMSG.size:
                return
            if mseq == seq:
                if typ == NLMSG_DONE:
                    return
                if typ == NLMSG_ERROR:
                    err = -struct.unpack_from("=i", buf, off + _NLMSG.size)[0]
                    if err:
                        raise OSError(err, f"sock_diag: {os.strerror(err)}")
                    return
                if typ == SOCK_DIAG_BY_FAMILY:
                    yield buf[off + _NLMSG.size : off + ln]
            off += (ln + 3) & ~3


def dump(families: Iterable[int], states: int, ext: int) -> list[DiagMsg]:
    """Every TCP socket of this network namespace in `states` (a bit mask), per family."""
    out: list[DiagMsg] = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                       NETLINK_INET_DIAG) as sock:  # fmt: skip
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((0, 0))
        for seq, fam in enumerate(families, start=1):
            sock.send(_request(fam, states, ext, seq))
            out.extend(decode(p) for p in _replies(sock, seq))
    return out
