"""TCP sockets from the kernel's sock_diag netlink (inet_diag, measure/inetdiag.py): tcp_info +
bbr_info.

Works without eBPF and without root (for the caller's own network namespace): this is the
fallback of `trace-peers` and the whole of `bdp`.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from netdiag.kernel import netns

# INET_DIAG extension bits: 1 << (attr - 1)
EXT_INFO = 1 << (2 - 1)  # INET_DIAG_INFO -> struct tcp_info
EXT_CC_INFO = 1 << (3 - 1)  # INET_DIAG_VEGASINFO bit also requests bbr/dctcp info
EXT_CONG = 1 << (4 - 1)  # INET_DIAG_CONG -> congestion control name
EXT_SKMEMINFO = 1 << (7 - 1)  # INET_DIAG_SKMEMINFO (attr 7) -> u32[SK_MEMINFO_VARS] (ss -m)

STATES = {
    1: "ESTABLISHED",
    2: "SYN_SENT",
    3: "SYN_RECV",
    4: "FIN_WAIT1",
    5: "FIN_WAIT2",
    6: "TIME_WAIT",
    7: "CLOSE",
    8: "CLOSE_WAIT",
    9: "LAST_ACK",
    10: "LISTEN",
    11: "CLOSING",
}
CA_STATES = {0: "Open", 1: "Disorder", 2: "CWR", 3: "Recovery", 4: "Loss"}
# established-ish states: everything but LISTEN, CLOSE, TIME_WAIT, SYN_RECV
SS_CONN = ((1 << 12) - 1) & ~((1 << 10) | (1 << 7) | (1 << 6) | (1 << 3))


@dataclass(frozen=True)
class TcpInfo:
    """The subset of struct tcp_info netdiag uses, with units in the names."""

    ca_state: str
    retransmits: int
    rto_us: int
    snd_mss: int
    rcv_mss: int
    unacked: int
    lost: int
    rtt_us: int
    rttvar_us: int
    min_rtt_us: int
    snd_ssthresh: int
    snd_cwnd: int
    total_retrans: int
    pacing_rate_bps: int
    delivery_rate_bps: int
    delivery_rate_app_limited: bool
    busy_time_us: int
    rwnd_limited_us: int
    sndbuf_limited_us: int
    bytes_acked: int
    bytes_received: int
    bytes_sent: int
    bytes_retrans: int
    snd_wnd: int
    rcv_space: int
    segs_out: int
    notsent_bytes: int
    # fields the verdict engine reads (defaults keep older callers and fixtures working)
    probes: int = 0  # unanswered zero-window probes outstanding
    backoff: int = 0
    sacked: int = 0  # LISTEN: the listener's max backlog (sk_max_ack_backlog)
    retrans: int = 0  # segments retransmitted and not yet acked
    reordering: int = 0
    rcv_ssthresh: int = 0
    rcv_rtt_us: int = 0
    delivered: int = 0
    dsack_dups: int = 0
    reord_seen: int = 0
    last_data_sent_ms: int = 0
    last_data_recv_ms: int = 0
    rcv_ooopack: int = 0  # out-of-order packets received (loss or reordering upstream)


@dataclass(frozen=True)
class SkMem:
    """INET_DIAG_SKMEMINFO (what `ss -m` prints as skmem:(r…,rb…,t…,tb…,f…,w…,o…,bl…,d…))."""

    rmem_alloc: int  # bytes in the receive queue (r)
    rcvbuf: int  # sk_rcvbuf (rb)
    wmem_alloc: int  # bytes handed to the device, not yet freed (t)
    sndbuf: int  # sk_sndbuf (tb)
    fwd_alloc: int
    wmem_queued: int  # bytes in the write queue: sent-unacked + not sent (w)
    optmem: int
    backlog: int
    drops: int  # packets dropped by this socket (d)


@dataclass(frozen=True)
class BbrInfo:
    bw_bps: int
    min_rtt_us: int
    pacing_gain: float
    cwnd_gain: float


@dataclass(frozen=True)
class TcpConn:
    cookie: int
    family: int
    state: str
    laddr: str
    lport: int
    raddr: str
    rport: int
    inode: int
    uid: int
    cgroup_id: int | None
    cc: str | None
    info: TcpInfo | None
    bbr: BbrInfo | None
    rqueue: int = 0  # LISTEN: accept-queue length; else bytes received, not yet read
    wqueue: int = 0  # LISTEN: max backlog; else bytes sent, not yet acked
    skmem: SkMem | None = None

    @property
    def peer(self) -> str:
        return join_hostport(self.raddr, self.rport)


def join_hostport(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def addr_text(raw: Any) -> str:
    """An address as ss prints it: dual-stack sockets speaking IPv4 (::ffff:a.b.c.d) as IPv4."""
    a = ipaddress.ip_address(raw)
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped:
        return str(a.ipv4_mapped)
    return str(a)


def _u(d: Any, k: str) -> int:
    v = d.get(k) if hasattr(d, "get") else None
    return int(v) if v is not None else 0


def tcp_info_from(ti: Any) -> TcpInfo:
    """Decode a tcp_info nla (a mapping of tcpi_* names: inetdiag's or pyroute2's)."""
    # pyroute2 masks the app-limited bitfield with (0x80 >> 7) == 1: bit 0, which is where the
    # kernel's `__u8 tcpi_delivery_rate_app_limited:1` lives on little-endian hosts.
    return TcpInfo(
        ca_state=CA_STATES.get(_u(ti, "tcpi_ca_state"), str(_u(ti, "tcpi_ca_state"))),
        retransmits=_u(ti, "tcpi_retransmits"),
        rto_us=_u(ti, "tcpi_rto"),
        snd_mss=_u(ti, "tcpi_snd_mss"),
        rcv_mss=_u(ti, "tcpi_rcv_mss"),
        unacked=_u(ti, "tcpi_unacked"),
        lost=_u(ti, "tcpi_lost"),
        rtt_us=_u(ti, "tcpi_rtt"),
        rttvar_us=_u(ti, "tcpi_rttvar"),
        min_rtt_us=_u(ti, "tcpi_min_rtt"),
        snd_ssthresh=_u(ti, "tcpi_snd_ssthresh"),
        snd_cwnd=_u(ti, "tcpi_snd_cwnd"),
        total_retrans=_u(ti, "tcpi_total_retrans"),
        pacing_rate_bps=_u(ti, "tcpi_pacing_rate") * 8,
        delivery_rate_bps=_u(ti, "tcpi_delivery_rate") * 8,
        delivery_rate_app_limited=bool(_u(ti, "tcpi_delivery_rate_app_limited") & 1),
        busy_time_us=_u(ti, "tcpi_busy_time"),
        rwnd_limited_us=_u(ti, "tcpi_rwnd_limited"),
        sndbuf_limited_us=_u(ti, "tcpi_sndbuf_limited"),
        bytes_acked=_u(ti, "tcpi_bytes_acked"),
        bytes_received=_u(ti, "tcpi_bytes_received"),
        bytes_sent=_u(ti, "tcpi_bytes_sent"),
        bytes_retrans=_u(ti, "tcpi_bytes_retrans"),
        snd_wnd=_u(ti, "tcpi_snd_wnd"),
        rcv_space=_u(ti, "tcpi_rcv_space"),
        segs_out=_u(ti, "tcpi_segs_out"),
        notsent_bytes=_u(ti, "tcpi_notsent_bytes"),
        probes=_u(ti, "tcpi_probes"),
        backoff=_u(ti, "tcpi_backoff"),
        sacked=_u(ti, "tcpi_sacked"),
        retrans=_u(ti, "tcpi_retrans"),
        reordering=_u(ti, "tcpi_reordering"),
        rcv_ssthresh=_u(ti, "tcpi_rcv_ssthresh"),
        rcv_rtt_us=_u(ti, "tcpi_rcv_rtt"),
        delivered=_u(ti, "tcpi_delivered"),
        dsack_dups=_u(ti, "tcpi_dsack_dups"),
        reord_seen=_u(ti, "tcpi_reord_seen"),
        last_data_sent_ms=_u(ti, "tcpi_last_data_sent"),
        last_data_recv_ms=_u(ti, "tcpi_last_data_recv"),
        rcv_ooopack=_u(ti, "tcpi_rcv_ooopack"),
    )


def skmem_from(raw: Any) -> SkMem | None:
    """Decode INET_DIAG_SKMEMINFO: pyroute2 hands it over as hex text ("00:10:…") or bytes."""
    if raw is None:
        return None
    if isinstance(raw, str):
        try:
            data = bytes.fromhex(raw.replace(":", ""))
        except ValueError:
            return None
    elif isinstance(raw, bytes | bytearray):
        data = bytes(raw)
    else:
        return None
    if len(data) < 36:
        return None
    v = struct.unpack_from("=9I", data)
    return SkMem(*v)


def bbr_info_from(b: Any) -> BbrInfo:
    return BbrInfo(
        bw_bps=((_u(b, "bbr_bw_hi") << 32) | _u(b, "bbr_bw_lo")) * 8,
        min_rtt_us=_u(b, "bbr_min_rtt"),
        pacing_gain=_u(b, "bbr_pacing_gain") / 256.0,  # BBR_UNIT = 1 << 8
        cwnd_gain=_u(b, "bbr_cwnd_gain") / 256.0,
    )


def conn_from(msg: Any) -> TcpConn:
    """Decode one inet_diag_msg (inetdiag.DiagMsg, or pyroute2's) into a TcpConn."""
    fam = int(msg["idiag_family"])
    ti = msg.get_attr("INET_DIAG_INFO")
    bbr = msg.get_attr("INET_DIAG_BBRINFO")
    cc = msg.get_attr("INET_DIAG_CONG")
    cg = msg.get_attr("INET_DIAG_CGROUP_ID")
    mem = msg.get_attr("INET_DIAG_SKMEMINFO")
    return TcpConn(
        cookie=int(msg["idiag_cookie"]),
        family=fam,
        state=STATES.get(int(msg["idiag_state"]), str(msg["idiag_state"])),
        laddr=addr_text(msg["idiag_src"]),
        lport=int(msg["idiag_sport"]),
        raddr=addr_text(msg["idiag_dst"]),
        rport=int(msg["idiag_dport"]),
        inode=int(msg["idiag_inode"]),
        uid=int(msg["idiag_uid"]),
        cgroup_id=int(cg) if cg is not None else None,
        cc=str(cc) if cc is not None else None,
        info=tcp_info_from(ti) if ti is not None else None,
        bbr=bbr_info_from(bbr) if bbr is not None and cc == "bbr" else None,
        rqueue=int(msg.get("idiag_rqueue") or 0),
        wqueue=int(msg.get("idiag_wqueue") or 0),
        skmem=skmem_from(mem),
    )


def _query(families: Iterable[int], states: int) -> list[TcpConn]:
    from netdiag.measure import inetdiag  # raw netlink: pyroute2's import is the slow part

    ext = EXT_INFO | EXT_CC_INFO | EXT_CONG | EXT_SKMEMINFO
    return [conn_from(msg) for msg in inetdiag.dump(families, states, ext)]


def snapshot(
    netns_name: str | None = None,
    states: int = SS_CONN,
    ports: Iterable[int] = (),
    families: Iterable[int] = (socket.AF_INET, socket.AF_INET6),
) -> list[TcpConn]:
    """TCP connections of a network namespace (None: ours), optionally only those on `ports`."""
    fams = tuple(families)
    conns = netns.run_in(netns_name, lambda: _query(fams, states))
    want = set(ports)
    if want:
        conns = [c for c in conns if c.lport in want or c.rport in want]
    return conns
