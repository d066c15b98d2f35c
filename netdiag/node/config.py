"""Node configuration: defaults < TOML file < NETDIAG_NODE_* environment < CLI overrides.

Limits are in the mould of go-libp2p's resource manager and connection manager defaults,
scaled to a small node; loopback is not exempt.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from netdiag.node.errors import ConfigError
from netdiag.node.limits import MIN_PEER_RATE

ENV_PREFIX = "NETDIAG_NODE_"


class NodeConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    data_dir: str
    genesis: str = ""  # a genesis JSON file, or ...
    network: str = ""  # ... a named network shipped in the package (networks.py)
    key: str = ""  # empty: a node key is generated once in data_dir (non-validator)
    entropy_secret: str = ""  # a validator's entropy secret; empty: the key path + .entropy
    listen: str = "127.0.0.1:7600"
    api: str = "127.0.0.1:7601"
    peers: list[str] = []
    # NAME:PORT resolved to peers (every address NAME has, e.g. a Kubernetes headless
    # service), re-resolved every peer_dns_interval_s (peer_dns.py)
    peer_dns: list[str] = []
    peer_dns_interval_s: float = 30.0
    tls: bool = True
    produce: bool = True  # produce blocks in our slots if our key is a genesis validator
    min_peers_to_produce: int = -1  # -1: hear from a majority of validators (presence.py)
    presence_interval_s: float = 1.0  # validator beacons; one is fresh for 3 intervals
    # connections
    max_inbound: int = 64
    max_outbound: int = 16
    target_outbound: int = 8
    max_inbound_per_ip: int = 16
    max_pending_handshakes: int = 32  # inbound sockets in TLS/node handshake (go-libp2p transient)
    conn_rate_per_ip: float = 1.0  # new inbound connections per second per IP (0 = off) ...
    conn_burst_per_ip: int = 16  # ... with this burst
    conn_memory_bytes: int = 0  # per connection: buffered + queued bytes; 0 = 2 frames + write cap
    node_memory_bytes: int = 0  # all connections together; 0 = 1/8 of RAM within [128 MiB, 1 GiB]
    handshake_timeout_s: float = 5.0
    idle_timeout_s: float = 60.0
    ping_interval_s: float = 15.0
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 60.0
    max_known_addrs: int = 1000
    # per-peer limits
    max_frame_bytes: int = 4 << 20
    peer_msg_rate: float = 5000.0  # messages/s sustained, burst 2x (load tests stay under it)
    peer_bytes_rate: float = 16 << 20  # bytes/s sustained, burst 2x (reads are throttled)
    # messages/s from all inbound connections of one IP together, burst 2x; reads are
    # throttled, nobody is scored (many peer ids from one address; 0 = off)
    ip_msg_rate: float = 10_000.0
    max_write_buffer_bytes: int = 16 << 20  # a peer that does not read is disconnected
    # output waiting for a peer that acknowledges none of our bytes for this long: the peer
    # does not read, disconnected (0 = off); a slow reader that receives anything is not stalled
    write_stall_timeout_s: float = 10.0
    # Every protocol violation closes its connection; a peer id with more than this many on
    # record (kept across reconnects, forgotten as its score decays) is banned.
    max_violations: int = 1
    # scores and bans
    ban_threshold: float = -100.0
    ban_seconds: float = 600.0
    score_half_life_s: float = 120.0  # penalties kept per peer id and per IP across reconnects
    score_retain_s: float = 3600.0  # an idle score entry is forgotten after this
    ip_ban_factor: float = 3.0  # an IP is banned when its peers' penalties reach 3x the threshold
    max_failed_handshakes_per_ip: int = 30  # per minute, then the IP is banned for ban_seconds
    # chain
    mempool_max_txs: int = 10_000
    mempool_max_bytes: int = 32 << 20
    orphan_max: int = 256
    sync_batch: int = 64
    sync_timeout_s: float = 5.0
    sync_window: int = 1024  # parallel sync: heights ahead of the tip that may be in flight
    sync_peer_inflight: int = 4  # parallel sync: requests in flight per peer
    sync_timeout_min_s: float = 2.0  # per-peer request timeout, doubled on each stall ...
    sync_timeout_max_s: float = 64.0  # ... up to this
    sync_parallel_min: int = 32  # further behind than this, parallel sync takes over
    max_reorg_depth: int = 64  # deepest fork we switch away from (longest valid chain wins)
    # forward a gossiped block after its cheap checks, before its transactions' (ingest.py)
    early_forward: bool = True
    # compact block relay (compact.py, protocol version 3): blocks for version-3 peers go as
    # header + tx ids, rebuilt from the mempool; missing txs asked for, then the full block
    # from another peer when that answer is late (compact_timeout_s), empty or wrong. Off: full
    # blocks sent (compact ones from peers are still taken). On by default: measured better on
    # lossy-wan and wan (docs/benchmarks.md, p2p, "Compact block relay"). Reconstructions
    # waiting per announcing peer and in total are bounded; recently evicted/committed txs kept.
    compact_blocks: bool = True
    compact_timeout_s: float = 1.0
    compact_pending_per_peer: int = 4
    compact_pending_max: int = 32
    compact_recent_txs: int = 4096
    compact_recent_bytes: int = 8 << 20  # ... and at most this many bytes of them (0: none)
    # per-peer send queue: gossip other than blocks waits for the end of the loop turn and goes
    # out in one write after any block frame sent meanwhile (outbox.low_priority)
    send_priority: bool = True
    # per peer socket: the kernel keeps at most this many unsent bytes (TCP_NOTSENT_LOWAT) and
    # the rest waits in the node's send queue, where a block still overtakes tx gossip
    # (sendqueue.py); 0 = off (every frame is handed to the kernel at once)
    notsent_lowat_bytes: int = 32 << 10
    # processes verifying signature batches (sync segments, big blocks): -1 one per CPU,
    # 0 or 1 none (verified on the node loop)
    verify_workers: int = -1
    # state snapshots (snapshot.py): taken every this many blocks (0 = never), the newest
    # snapshot_keep kept; chunks cut at bucket boundaries once this big (the same on every
    # node gives the same chunks, so a joiner can fetch one snapshot from several peers)
    snapshot_interval: int = 1000
    snapshot_keep: int = 2
    snapshot_chunk_bytes: int = 256 << 10
    # onboarding (onboard.py): a fresh node starts from the newest announced snapshot instead
    # of replaying from genesis; it waits this long for an announcement, then replays
    snapshot_sync: bool = False
    snapshot_wait_s: float = 5.0
    # ... and waits (up to snapshot_wait_s) until this many connected peers hold it
    snapshot_min_sources: int = 1
    snapshot_announce_s: float = 2.0  # our newest snapshot is announced this often
    # LAB ONLY (bench sync --bad-sources, tests): serve every snapshot chunk with a byte flipped
    debug_corrupt_chunks: bool = False
    entropy_sample: int = 8  # peers asked in each epoch-boundary entropy check
    entropy_timeout_ms: int = 300  # how long their answers are collected
    debug_divergent_entropy_epoch: int = -1  # TEST HOOK: corrupt our entropy once, at this epoch
    # LAB ONLY (bench p2p --byzantine): serve blocks at or above this height forged (bad
    # signature) in GetBlocks range answers; single-block (tip) answers stay genuine. -1 = off
    debug_forge_sync_from: int = -1
    # LAB ONLY (bench attack future_rounds): publish at once for the earliest future round we
    # own that peers would still accept (debug_rotation.py)
    debug_produce_future_rounds: bool = False
    status_interval_s: float = 2.0
    gossip_heartbeat_s: float = 1.0
    gossip_d: int = 6  # mesh degree and its bounds (gossipsub defaults 6/4/12)
    gossip_d_lo: int = 4
    gossip_d_hi: int = 12
    gossip_seen_ttl_s: float = 120.0
    gossip_seen_max: int = 8_192  # seen-cache records (~235 B each), oldest dropped first
    # discovery (Kademlia: kademlia.py, discovery.py, kadrpc.py; docs/node.md)
    # Kademlia discovery: outbound peers come from the routing table and `peers` only
    # bootstrap; off: the node dials exactly `peers` (and peer exchange) and runs no lookups
    discovery: bool = True
    kad_k: int = 20  # bucket size and lookup width
    kad_alpha: int = 3  # lookup requests in flight
    kad_request_timeout_s: float = 3.0  # per request, including a probe's dial and handshake
    kad_refresh_s: float = 60.0  # self-lookup and per-bucket refresh period
    kad_max_probes: int = 8  # short-lived probe connections at once
    kad_subnet_bucket: int = 2  # entries of one /24 (IPv4) or /48 (IPv6) per bucket ...
    kad_subnet_table: int = 10  # ... and in the whole table
    kad_outbound_per_subnet: int = 1  # outbound peers dialled from the table per /24 (/48)
    kad_persist_s: float = 10.0  # a changed table is written to the store at most this often
    # LAB ONLY (bench discovery's eclipse attacker): answer FindNode only with table entries in
    # this subnet (e.g. "127.78.0.0/24"), as Sybils that push each other. "" = off
    debug_kad_only_subnet: str = ""
    # operations
    log_level: str = "info"
    api_header_timeout_s: float = 10.0  # a request header (or body) not complete by then: closed
    # output waiting for an API client that acknowledges none of it (or under MIN_PEER_RATE
    # on average, one timeout of slack) this long: the connection is reset (apiguard.py)
    api_write_timeout_s: float = 10.0
    api_max_connections: int = 64  # API connections at once; past it the stalest is evicted


# Allowed ranges, checked after parsing: (lowest, whether the lowest itself is allowed).
# Numeric keys not listed must merely be finite. Each failure names the key and how to set it.
POSITIVE = (0.0, False)
NON_NEGATIVE = (0.0, True)
AT_LEAST_ONE = (1.0, True)
RANGES: dict[str, tuple[float, bool]] = {
    "min_peers_to_produce": (-1.0, True),
    "presence_interval_s": POSITIVE,
    "max_inbound": NON_NEGATIVE,
    "max_outbound": NON_NEGATIVE,
    "target_outbound": NON_NEGATIVE,
    "max_inbound_per_ip": AT_LEAST_ONE,
    "max_pending_handshakes": AT_LEAST_ONE,
    "conn_rate_per_ip": NON_NEGATIVE,
    "conn_burst_per_ip": AT_LEAST_ONE,
    "conn_memory_bytes": NON_NEGATIVE,
    "node_memory_bytes": NON_NEGATIVE,
    "handshake_timeout_s": POSITIVE,
    "idle_timeout_s": POSITIVE,
    "ping_interval_s": POSITIVE,
    "reconnect_min_s": POSITIVE,
    "peer_dns_interval_s": POSITIVE,
    "reconnect_max_s": POSITIVE,
    "max_known_addrs": AT_LEAST_ONE,
    "max_frame_bytes": (4096.0, True),  # the handshake frame cap
    "peer_msg_rate": POSITIVE,
    # reading slower than the floor peers hold us to (limits.MIN_PEER_RATE) gets us cut by them
    "peer_bytes_rate": (float(MIN_PEER_RATE), True),
    "write_stall_timeout_s": NON_NEGATIVE,  # and OFF_OR_WITHIN
    "ip_msg_rate": NON_NEGATIVE,
    "max_write_buffer_bytes": AT_LEAST_ONE,
    "max_violations": AT_LEAST_ONE,
    "ban_seconds": NON_NEGATIVE,
    "score_half_life_s": POSITIVE,
    "score_retain_s": POSITIVE,
    "ip_ban_factor": AT_LEAST_ONE,
    "max_failed_handshakes_per_ip": AT_LEAST_ONE,
    "mempool_max_txs": AT_LEAST_ONE,
    "snapshot_interval": NON_NEGATIVE,
    "snapshot_keep": AT_LEAST_ONE,
    "snapshot_chunk_bytes": (1024.0, True),
    "snapshot_wait_s": NON_NEGATIVE,
    "snapshot_min_sources": AT_LEAST_ONE,
    "snapshot_announce_s": POSITIVE,
    "mempool_max_bytes": AT_LEAST_ONE,
    "orphan_max": NON_NEGATIVE,
    "sync_batch": AT_LEAST_ONE,
    "sync_timeout_s": POSITIVE,
    "sync_window": AT_LEAST_ONE,
    "sync_peer_inflight": AT_LEAST_ONE,
    "sync_timeout_min_s": POSITIVE,
    "sync_timeout_max_s": POSITIVE,
    "sync_parallel_min": NON_NEGATIVE,
    "max_reorg_depth": NON_NEGATIVE,
    "compact_timeout_s": POSITIVE,
    "compact_pending_per_peer": AT_LEAST_ONE,
    "compact_pending_max": AT_LEAST_ONE,
    "compact_recent_txs": NON_NEGATIVE,
    "compact_recent_bytes": NON_NEGATIVE,
    "verify_workers": (-1.0, True),
    "entropy_sample": AT_LEAST_ONE,
    "entropy_timeout_ms": AT_LEAST_ONE,
    "debug_divergent_entropy_epoch": (-1.0, True),
    "debug_forge_sync_from": (-1.0, True),
    "status_interval_s": POSITIVE,
    "gossip_heartbeat_s": POSITIVE,
    "gossip_seen_ttl_s": POSITIVE,
    "gossip_seen_max": AT_LEAST_ONE,
    "api_header_timeout_s": POSITIVE,
    "api_write_timeout_s": NON_NEGATIVE,  # and OFF_OR_WITHIN
    "api_max_connections": AT_LEAST_ONE,
}
# Keys that are either 0 (off) or within [low, high].
OFF_OR_WITHIN = {
    "notsent_lowat_bytes": (4096, 4 << 20),
    # TCP_USER_TIMEOUT takes it in ms as a u32 (over ~2.1e6 s setsockopt raises); under 1 s a
    # check every timeout/4 cuts honest peers on a brief pause
    "write_stall_timeout_s": (1, 3600),
    "api_write_timeout_s": (1, 3600),  # the same (TCP_USER_TIMEOUT, a check per timeout/4)
}
ORDERED = [  # (smaller, larger): the first may not exceed the second
    ("target_outbound", "max_outbound"),
    ("reconnect_min_s", "reconnect_max_s"),
    ("sync_timeout_min_s", "sync_timeout_max_s"),
]
LOG_LEVELS = ("debug", "info", "warning", "error")


def _how(key: str) -> str:
    return f"{ENV_PREFIX}{key.upper()} or `{key}` in --config"


def check_ranges(cfg: NodeConfig) -> None:
    """Raise ConfigError naming the first key whose value is out of range."""
    for f in msgspec.structs.fields(NodeConfig):
        v = getattr(cfg, f.name)
        if isinstance(v, bool) or not isinstance(v, int | float):
            continue
        if not math.isfinite(v):
            raise ConfigError(f"config {f.name} = {v} must be a finite number (set {_how(f.name)})")
        lo, inclusive = RANGES.get(f.name, (-math.inf, True))
        if v < lo or (v == lo and not inclusive):
            bound = f">= {lo:g}" if inclusive else f"> {lo:g}"
            raise ConfigError(
                f"config {f.name} = {v:g} is out of range: must be {bound} (set {_how(f.name)})"
            )
    for key, (low, high) in OFF_OR_WITHIN.items():
        v = getattr(cfg, key)
        if v != 0 and not low <= v <= high:
            raise ConfigError(
                f"config {key} = {v:g} is out of range: must be 0 (off) or within "
                f"[{low:g}, {high:g}] (set {_how(key)})"
            )
    for small, large in ORDERED:
        if getattr(cfg, small) > getattr(cfg, large):
            raise ConfigError(
                f"config {small} = {getattr(cfg, small):g} exceeds {large} = "
                f"{getattr(cfg, large):g} (set {_how(small)} or {_how(large)})"
            )
    if cfg.ping_interval_s >= cfg.idle_timeout_s / 2:
        raise ConfigError(
            f"config ping_interval_s = {cfg.ping_interval_s:g} must be under half of "
            f"idle_timeout_s = {cfg.idle_timeout_s:g}, or a silent peer's pong comes too late "
            f"(set {_how('ping_interval_s')} or {_how('idle_timeout_s')})"
        )
    if cfg.log_level not in LOG_LEVELS:
        raise ConfigError(
            f"config log_level = {cfg.log_level!r} is not one of {', '.join(LOG_LEVELS)} "
            f"(set {_how('log_level')})"
        )


def _parse_env(env: Mapping[str, str]) -> dict[str, Any]:
    fields = {f.name: f for f in msgspec.structs.fields(NodeConfig)}
    out: dict[str, Any] = {}
    for k, v in env.items():
        if not k.startswith(ENV_PREFIX):
            continue
        name = k[len(ENV_PREFIX) :].lower()
        if name not in fields:
            raise ConfigError(f"unknown environment variable {k} (no config field {name!r})")
        listed = name in ("peers", "peer_dns")
        out[name] = [p.strip() for p in v.split(",") if p.strip()] if listed else v
    return out


def load_config(
    file: Path | None, env: Mapping[str, str], overrides: Mapping[str, Any]
) -> NodeConfig:
    merged: dict[str, Any] = {}
    if file is not None:
        try:
            merged.update(tomllib.loads(file.read_text()))
        except OSError as e:
            raise ConfigError(f"cannot read config file {file}: {e.strerror}") from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {file} is not TOML: {e}") from e
    merged.update(_parse_env(env))
    merged.update(
        {
            k: v
            for k, v in overrides.items()
            if v is not None and not (isinstance(v, list | tuple) and not v)
        }
    )
    for k in ("peers", "peer_dns"):
        if k in merged and isinstance(merged[k], tuple):
            merged[k] = list(merged[k])
    missing = [k for k in ("data_dir", "genesis") if not merged.get(k)]
    if merged.get("network"):
        missing = [k for k in missing if k != "genesis"]
    if missing:
        raise ConfigError(
            f"no {' and no '.join(missing)} given: pass --data-dir DIR and --genesis FILE or "
            "--network NAME (or set them in --config, or NETDIAG_NODE_DATA_DIR/"
            "NETDIAG_NODE_GENESIS/NETDIAG_NODE_NETWORK)"
        )
    if merged.get("network") and merged.get("genesis"):
        raise ConfigError("both --network and --genesis given: pass one of them")
    try:
        cfg = msgspec.convert(merged, NodeConfig, strict=False)
    except msgspec.ValidationError as e:
        raise ConfigError(f"invalid node configuration: {e}") from e
    for addr in [cfg.listen, cfg.api, *cfg.peers, *cfg.peer_dns]:
        split_hostport(addr)
    check_ranges(cfg)
    if not 1 <= cfg.gossip_d_lo <= cfg.gossip_d <= cfg.gossip_d_hi:
        raise ConfigError("gossip degrees must satisfy 1 <= gossip_d_lo <= gossip_d <= gossip_d_hi")
    return cfg


def split_hostport(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or not 0 <= int(port) < 65536:
        raise ConfigError(f"address {addr!r} is not HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)
