"""The node: wires chain, mempool, gossip, sync, producer, peers and the API together.

All peer input arrives through ``ConnectionHandler`` callbacks from the transport; all output
leaves through ``Connection.send``. Decisions are logged with the reason they were taken.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
import time
import traceback
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import msgspec

from netdiag.node import tls
from netdiag.node.chain import Chain, now_ms
from netdiag.node.config import NodeConfig, split_hostport
from netdiag.node.crypto import Identity, load_identity, save_identity
from netdiag.node.debug import forge
from netdiag.node.entropy_check import EntropyCheck, EntropyParams
from netdiag.node.errors import ValidationError
from netdiag.node.genesis import GenesisSpec, load_genesis
from netdiag.node.gossip import GossipParams, GossipRouter, Send
from netdiag.node.logs import NodeLog
from netdiag.node.mempool import Mempool
from netdiag.node.messages import (
    TOPIC_BLOCKS,
    TOPIC_PRESENCE,
    TOPIC_TXS,
    Blocks,
    EntropyRequest,
    EntropyResponse,
    GetBlocks,
    GetBlocksByHash,
    GetHeaders,
    GetPeers,
    Graft,
    Headers,
    IHave,
    IWant,
    Message,
    Peers,
    Ping,
    Pong,
    Prune,
    Publish,
    Status,
)
from netdiag.node.metrics import NodeMetrics
from netdiag.node.model import Block, BlockHeader, Tx, decode_block, decode_tx, make_block
from netdiag.node.peers import PeerBook
from netdiag.node.presence import Presence, make_beacon
from netdiag.node.protocol import PeerProtocol, Violation
from netdiag.node.store import Store
from netdiag.node.transport import Connection
from netdiag.node.validation import BadPrevHash, check_tx
from netdiag.node.window_sync import ParallelSync, WindowParams

MAX_SERVE_BLOCKS = 128
MAX_SERVE_HEADERS = 256
PENALTY_VIOLATION = 50.0
PENALTY_INVALID = 20.0
PENALTY_RATE = 1.0
FORGERY_REASONS = frozenset({"hash", "signature"})  # in a sync answer: ban at once


def short(b: bytes) -> str:
    return b[:6].hex()


class Node:
    def __init__(self, cfg: NodeConfig, log: NodeLog, clock: Callable[[], float] = time.monotonic):
        self.cfg = cfg
        self.log = log
        self.clock = clock
        self.metrics = NodeMetrics()
        self.data_dir = Path(cfg.data_dir)
        self.genesis: GenesisSpec = load_genesis(Path(cfg.genesis))
        self.identity = self._load_or_make_identity()
        self.node_id = self.identity.node_id
        self.is_validator = self.node_id in self.genesis.validators
        self.chain: Chain | None = None
        self.presence: Presence | None = None  # made in start(): it needs the genesis hash
        self.mempool = Mempool(cfg.mempool_max_txs, cfg.mempool_max_bytes)
        self.gossip = GossipRouter(
            GossipParams(
                d=cfg.gossip_d,
                d_lo=cfg.gossip_d_lo,
                d_hi=cfg.gossip_d_hi,
                d_score=min(4, cfg.gossip_d),
                heartbeat_s=cfg.gossip_heartbeat_s,
                seen_ttl_s=cfg.gossip_seen_ttl_s,
            ),
            clock,
        )
        self.sync = ParallelSync(
            self,
            clock,
            WindowParams(
                window=cfg.sync_window,
                chunk=cfg.sync_batch,
                per_peer=cfg.sync_peer_inflight,
                timeout_min_s=cfg.sync_timeout_min_s,
                timeout_max_s=cfg.sync_timeout_max_s,
                min_distance=cfg.sync_parallel_min,
            ),
            cfg.sync_batch,
            cfg.sync_timeout_s,
            cfg.max_reorg_depth,
        )
        self.entropy = EntropyCheck(
            self,
            clock,
            EntropyParams(sample=cfg.entropy_sample, timeout_s=cfg.entropy_timeout_ms / 1000),
        )
        self._entropy: dict[int, bytes] = {}  # seed height -> our entropy hash (bounded)
        self._entropy_fault_used = False
        self.conns: dict[bytes, Connection] = {}  # authenticated, by peer id
        self.pending: set[Connection] = set()  # handshaking
        self.book = PeerBook(cfg, clock)
        self.produced: set[tuple[int, int]] = set()
        self.started_at = clock()
        self.listen_port = 0
        self.api_port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._conn_tasks: set[asyncio.Task[Any]] = set()  # inbound handlers, owned by the server
        self._stopping = asyncio.Event()
        self._ssl_server: ssl.SSLContext | None = None
        self._ssl_client: ssl.SSLContext | None = None
        self._api_runner: object | None = None

    # -- identity and lifecycle ------------------------------------------------------------

    def _load_or_make_identity(self) -> Identity:
        if self.cfg.key:
            return load_identity(Path(self.cfg.key))
        path = self.data_dir / "node.key"
        if path.exists():
            return load_identity(path)
        ident = Identity.generate()
        save_identity(ident, path)
        return ident

    @property
    def height(self) -> int:
        assert self.chain is not None
        return self.chain.height

    async def start(self) -> None:
        from netdiag.node.api import start_api

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.chain = Chain(
            Store(self.data_dir / "chain.sqlite"), self.genesis, now_ms, self.cfg.orphan_max
        )
        self.metrics.height.set(self.chain.height)
        self.presence = Presence(
            self.genesis.validators,
            self.chain.genesis_hash,
            3 * self.cfg.presence_interval_s,
            self.clock,
        )
        if self.cfg.tls:
            cert, key = tls.write_certificate(self.identity, self.data_dir / "tls")
            self._ssl_server = tls.server_context(cert, key)
            self._ssl_client = tls.client_context(cert, key)
        host, port = split_hostport(self.cfg.listen)
        self._server = await asyncio.start_server(
            self._on_inbound,
            host,
            port,
            ssl=self._ssl_server,
            limit=1 << 16,
            ssl_handshake_timeout=self.cfg.handshake_timeout_s if self.cfg.tls else None,
        )
        self.listen_port = self._server.sockets[0].getsockname()[1]
        self._api_runner, self.api_port = await start_api(self)
        self._spawn(self._every("dial", 0.2, self._dial_step))
        self._spawn(self._every("heartbeat", self.cfg.gossip_heartbeat_s, self._heartbeat_step))
        self._spawn(self._every("status", self.cfg.status_interval_s, self._status_step))
        self._spawn(self._every("sync", 0.25, self._sync_step))  # timeouts start at 2 s
        if self.cfg.produce and self.is_validator:  # check ten times a slot
            tick_s = max(0.01, self.genesis.params.slot_ms / 10_000)
            self._spawn(self._every("producer", tick_s, self._maybe_produce))
        if self.is_validator:  # a validator that does not produce is still part of the quorum
            self._spawn(self._every("presence", self.cfg.presence_interval_s, self._beacon_step))
        self.log.info(
            "node_started",
            f"node {short(self.node_id)} up at height {self.chain.height} "
            f"({'validator' if self.is_validator else 'observer'}), p2p {host}:{self.listen_port} "
            f"tls={'on' if self.cfg.tls else 'off'}, api 127.0.0.1:{self.api_port}",
            node_id=self.node_id.hex(),
            height=self.chain.height,
            tip=self.chain.tip_hash.hex(),
            p2p_port=self.listen_port,
            api_port=self.api_port,
            genesis=self.chain.genesis_hash.hex(),
            validator=self.is_validator,
            tls=self.cfg.tls,
        )

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            self.log.error("task_failed", f"background task failed: {exc!r}", error=repr(exc))

    async def run_until_signal(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        await self.start()
        await self._stopping.wait()
        await self.stop()

    def _on_signal(self, sig: signal.Signals) -> None:
        self.log.info("shutdown", f"received {sig.name}: closing peers, API and store")
        self._stopping.set()

    def request_stop(self) -> None:
        self._stopping.set()

    async def stop(self) -> None:
        from netdiag.node.api import stop_api

        for conn in [*self.conns.values(), *self.pending]:
            conn.close("node shutting down")
        if self._server is not None:
            self._server.close()
        if self._conn_tasks:  # let connection handlers report their close before the store goes
            await asyncio.wait(list(self._conn_tasks), timeout=2.0)
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=3.0)
        if self._api_runner is not None:
            await stop_api(self._api_runner)
        if self.chain is not None:
            self.chain.store.close()
        self.log.info(
            "node_stopped",
            f"node {short(self.node_id)} stopped cleanly at height "
            f"{self.chain.height if self.chain else 0}",
        )

    # -- connections -----------------------------------------------------------------------

    def _new_conn(
        self,
        r: asyncio.StreamReader,
        w: asyncio.StreamWriter,
        outbound: bool,
        dialed: str | None = None,
    ) -> Connection:
        assert self.chain is not None
        proto = PeerProtocol(
            self.identity,
            self.genesis.network_id,
            self.chain.genesis_hash,
            self.listen_port,
            self.cfg.max_frame_bytes,
        )
        return Connection(
            r,
            w,
            proto,
            outbound,
            msg_rate=self.cfg.peer_msg_rate,
            bytes_rate=self.cfg.peer_bytes_rate,
            max_write_buffer=self.cfg.max_write_buffer_bytes,
            handshake_timeout_s=self.cfg.handshake_timeout_s,
            idle_timeout_s=self.cfg.idle_timeout_s,
            dialed_addr=dialed,
        )

    async def _on_inbound(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        conn = self._new_conn(r, w, outbound=False)
        refusal = self._inbound_refusal(conn.remote_host)
        if refusal:
            self.metrics.limit_hits.labels(refusal[0]).inc()
            self.log.info(
                "inbound_refused",
                f"refused inbound {conn.address}: {refusal[1]}",
                addr=conn.address,
                reason=refusal[0],
            )
            w.close()
            return
        self.pending.add(conn)
        task = asyncio.current_task()
        if task is not None:
            self._conn_tasks.add(task)
        try:
            await conn.run(self)
        finally:
            if task is not None:
                self._conn_tasks.discard(task)

    def _inbound_refusal(self, ip: str) -> tuple[str, str] | None:
        if self.book.ip_banned(ip):
            return "banned_ip", f"{ip} is banned for failed handshakes"
        inbound = [c for c in [*self.conns.values(), *self.pending] if not c.outbound]
        if len(inbound) >= self.cfg.max_inbound:
            return "max_inbound", f"inbound limit {self.cfg.max_inbound} reached"
        if sum(c.remote_host == ip for c in inbound) >= self.cfg.max_inbound_per_ip:
            return "max_inbound_per_ip", f"per-IP inbound limit {self.cfg.max_inbound_per_ip}"
        return None

    async def _dial(self, addr: str) -> None:
        self.book.dialing.add(addr)
        try:
            host, port = split_hostport(addr)
            try:
                r, w = await asyncio.wait_for(
                    asyncio.open_connection(host, port, ssl=self._ssl_client, limit=1 << 16),
                    self.cfg.handshake_timeout_s,
                )
            except (OSError, TimeoutError) as e:
                self._dial_failed(addr, f"connect failed: {e!r}")
                return
            conn = self._new_conn(r, w, outbound=True, dialed=addr)
            self.pending.add(conn)
            await conn.run(self)
            why = conn.close_reason or "handshake failed"
            if "handshake_self" in why:
                self.book.mark_self(addr)  # that address is us: never dial it again
            elif conn.peer_id is None or "refus" in why:
                self._dial_failed(addr, why)
        finally:
            self.book.dialing.discard(addr)

    def _dial_failed(self, addr: str, why: str) -> None:
        backoff = self.book.dial_failed(addr)
        self.log.debug(
            "dial_failed",
            f"dial {addr} failed ({why}); retry in {backoff:.1f} s",
            addr=addr,
            reason=why,
            failures=self.book.addrs[addr].failures,
        )

    def _dial_step(self) -> None:
        outbound = sum(c.outbound for c in self.conns.values())
        connected = {c.dialed_addr for c in self.conns.values()} | {
            c.listen_addr for c in self.conns.values()
        }
        own = {f"127.0.0.1:{self.listen_port}", self.cfg.listen}
        for addr in self.book.to_dial(connected, own, outbound):
            self._spawn(self._dial(addr))

    # ConnectionHandler -------------------------------------------------------------------

    def on_open(self, conn: Connection) -> str | None:
        refusal = self._open(conn)
        if refusal:
            assert conn.peer_id is not None
            self.log.info(
                "peer_refused",
                f"refused authenticated peer {short(conn.peer_id)} "
                f"({conn.direction}, {conn.address}): {refusal}",
                peer=conn.peer_id.hex(),
                addr=conn.address,
                reason=refusal,
            )
        return refusal

    def _open(self, conn: Connection) -> str | None:
        pid = conn.peer_id
        assert pid is not None
        self.pending.discard(conn)
        if self.book.peer_banned(pid):
            self.metrics.handshakes.labels("refused_banned").inc()
            return f"refused: peer {short(pid)} is banned"
        old = self.conns.get(pid)
        if old is not None:
            # Simultaneous dials: keep the connection dialed by the smaller node id.
            keep_new = (conn.outbound and self.node_id < pid) or (
                not conn.outbound and pid < self.node_id
            )
            if not keep_new or old.outbound == conn.outbound:
                self.metrics.handshakes.labels("refused_duplicate").inc()
                return f"refused: already connected to {short(pid)}"
            old.close("replaced by a simultaneous connection")
            self._drop_peer(old)
        if conn.outbound and sum(c.outbound for c in self.conns.values()) >= self.cfg.max_outbound:
            self.metrics.limit_hits.labels("max_outbound").inc()
            return "refused: outbound limit reached"
        self.conns[pid] = conn
        if conn.dialed_addr:
            self.book.connected(conn.dialed_addr)
        self.metrics.handshakes.labels("ok").inc()
        self._update_peer_gauges()
        self.log.info(
            "peer_connected",
            f"peer {short(pid)} connected ({conn.direction}, "
            f"{conn.address}, tls={conn.tls}, cookie={conn.cookie})",
            peer=pid.hex(),
            addr=conn.address,
            direction=conn.direction,
            socket_cookie=conn.cookie,
            tls=conn.tls,
        )
        self._send_all(self.gossip.add_peer(pid, conn.outbound))
        assert self.chain is not None
        conn.send(Status(self.chain.height, self.chain.tip_hash, self.chain.genesis_hash))
        conn.send(GetPeers())
        return None

    def on_closed(self, conn: Connection, reason: str) -> None:
        self.pending.discard(conn)
        if conn.peer_id is None:
            self._note_failed_handshake(conn, reason)
            return
        if self.conns.get(conn.peer_id) is conn:
            self._drop_peer(conn)
            self.log.info(
                "peer_disconnected",
                f"peer {short(conn.peer_id)} disconnected: {reason}",
                peer=conn.peer_id.hex(),
                addr=conn.address,
                reason=reason,
            )
        if conn.dialed_addr:
            self.book.disconnected(conn.dialed_addr)

    def _drop_peer(self, conn: Connection) -> None:
        assert conn.peer_id is not None
        if self.conns.get(conn.peer_id) is conn:
            del self.conns[conn.peer_id]
        self.gossip.remove_peer(conn.peer_id)
        self.sync.peer_gone(conn)
        self._update_peer_gauges()

    def _note_failed_handshake(self, conn: Connection, reason: str) -> None:
        self.metrics.handshakes.labels("failed").inc()
        if conn.outbound or "handshake_self" in reason:
            return  # our own dial to ourselves is not the remote address misbehaving
        self.log.info(
            "handshake_failed",
            f"inbound {conn.address} failed the handshake: {reason}",
            addr=conn.address,
            reason=reason,
        )
        if self.book.handshake_failed(conn.remote_host):
            self.metrics.bans.labels("ip").inc()
            self.log.warning(
                "ip_banned",
                f"banned {conn.remote_host} for "
                f"{self.cfg.ban_seconds:g} s: more than "
                f"{self.cfg.max_failed_handshakes_per_ip} failed handshakes a minute",
                ip=conn.remote_host,
            )

    def on_violation(self, conn: Connection, v: Violation) -> None:
        self.metrics.protocol_violations.labels(v.reason).inc()
        who = short(conn.peer_id) if conn.peer_id else conn.address
        self.log.warning(
            "protocol_violation",
            f"peer {who} violated the protocol ({v.reason}): {v.detail[:200]}; disconnecting",
            addr=conn.address,
            reason=v.reason,
            peer=conn.peer_id.hex() if conn.peer_id else None,
        )
        if conn.peer_id is not None:
            self.penalize(conn, PENALTY_VIOLATION, f"protocol violation {v.reason}")

    def on_limit(self, conn: Connection, limit: str) -> None:
        self.metrics.limit_hits.labels(limit).inc()
        # Dropping messages costs score (a flood ends in a ban); byte throttling does not — a
        # fast honest peer is merely slowed down by TCP backpressure.
        if conn.peer_id is not None and limit == "peer_msg_rate":
            self.penalize(conn, PENALTY_RATE, f"over {limit}")

    def penalize(self, conn: Connection, amount: float, reason: str) -> None:
        pid = conn.peer_id
        if pid is None:
            return
        self.gossip.penalize(pid, amount)
        score = self.gossip.score(pid)
        if score <= self.cfg.ban_threshold and self.conns.get(pid) is conn:
            self.book.ban_peer(pid)
            self.metrics.bans.labels("peer").inc()
            self.log.warning(
                "peer_banned",
                f"banned peer {short(pid)} for "
                f"{self.cfg.ban_seconds:g} s: score {score:.1f} fell below "
                f"{self.cfg.ban_threshold:g}, last for {reason}",
                peer=pid.hex(),
                score=score,
                reason=reason,
            )
            conn.close(f"banned: score {score:.1f} ({reason})")

    def _update_peer_gauges(self) -> None:
        out = sum(c.outbound for c in self.conns.values())
        self.metrics.peers.labels("outbound").set(out)
        self.metrics.peers.labels("inbound").set(len(self.conns) - out)

    # -- messages --------------------------------------------------------------------------

    def on_message(self, conn: Connection, msg: Message, size: int) -> None:
        try:
            self._dispatch(conn, msg, size)
        except Exception as e:  # a bug must cost one connection, never the node
            self.metrics.protocol_violations.labels("internal_error").inc()
            self.log.error(
                "internal_error",
                f"handling {type(msg).__name__} from {conn.address} "
                f"failed: {e!r}; closing that connection",
                addr=conn.address,
                exc=traceback.format_exc(),
            )
            conn.close(f"internal error handling {type(msg).__name__}")

    def _dispatch(self, conn: Connection, msg: Message, size: int) -> None:
        self.metrics.messages_received.labels(type(msg).__name__).inc()
        self.metrics.bytes_received.inc(size)
        pid = conn.peer_id
        assert pid is not None and self.chain is not None
        if self.gossip.score(pid) < self.gossip.p.graylist_threshold and isinstance(
            msg, Publish | IHave | IWant | Graft
        ):
            return  # graylisted: ignored until its score decays back
        match msg:
            case Publish(topic=topic, data=data):
                self._on_publish(conn, topic, data)
            case IHave(topic=topic, ids=ids):
                self._send_all(self.gossip.on_ihave(pid, topic, ids))
            case IWant(ids=ids):
                self._send_all(self.gossip.on_iwant(pid, ids))
            case Graft(topic=topic):
                self._send_all(self.gossip.on_graft(pid, topic))
            case Prune(topic=topic, backoff_s=backoff, peers=px):
                self.gossip.on_prune(pid, topic, backoff)
                self.book.learn(px)
            case Status():
                if msg.genesis_hash != self.chain.genesis_hash:
                    self.penalize(conn, PENALTY_VIOLATION, "status for another genesis")
                else:
                    self.sync.on_status(conn, msg)
            case GetBlocks(req_id=req, start=start, count=count):
                conn.send(Blocks(req, self._serve_range(start, count)))
            case GetBlocksByHash(req_id=req, hashes=hashes):
                found = [self.chain.store.block_by_hash(h) for h in hashes[:MAX_SERVE_BLOCKS]]
                conn.send(Blocks(req, [b.encode() for b in found if b is not None]))
            case GetHeaders(req_id=req, start=start, count=count):
                conn.send(Headers(req, self._serve_headers(start, count)))
            case Blocks() if self.entropy.owns(msg.req_id):
                self.entropy.on_blocks(conn, msg)
            case Blocks():
                self.sync.on_blocks(conn, msg)
            case EntropyRequest():
                self.entropy.answer(conn, msg)
            case EntropyResponse():
                if not self.entropy.on_response(conn, msg):
                    self.penalize(conn, 5.0, "unsolicited entropy response")
            case Headers():
                self.sync.on_headers(conn, msg)
            case GetPeers():
                conn.send(Peers(self._shareable_addrs(exclude=conn)))
            case Peers(addrs=addrs):
                self.book.learn(addrs)
            case Ping(nonce=n):
                conn.send(Pong(n))
            case Pong():
                pass
            case _:
                self.penalize(conn, PENALTY_INVALID, f"unexpected {type(msg).__name__}")

    def _serve_headers(self, start: int, count: int) -> list[bytes]:
        """Headers are small whatever the block size, so no byte budget — only a count cap."""
        assert self.chain is not None
        if not 0 <= start <= self.chain.height or count <= 0:
            return []
        end = min(start + min(count, MAX_SERVE_HEADERS), self.chain.height + 1)
        return [
            decode_block(raw).header.encode()
            for raw in self.chain.store.iter_range(start, end - start)
        ]

    def _serve_range(self, start: int, count: int) -> list[bytes]:
        assert self.chain is not None
        if not 0 <= start <= self.chain.height or count <= 0:
            return []
        out: list[bytes] = []
        budget = self.cfg.max_frame_bytes // 2
        for raw in self.chain.store.raw_range(start, min(count, MAX_SERVE_BLOCKS)):
            budget -= len(raw) + 8
            if budget < 0 and out:
                break
            out.append(raw)
        forge_from = self.cfg.debug_forge_sync_from
        if forge_from >= 0 and count > 1:  # LAB ONLY: a byzantine server (bench --byzantine)
            out = [
                forge(decode_block(r)).encode() if start + i >= forge_from else r
                for i, r in enumerate(out)
            ]
            self.log.warning(
                "forged_segment_served",
                f"debug hook: served blocks {start}..{start + len(out) - 1} forged from "
                f"height {forge_from}",
                start=start,
                count=len(out),
            )
        return out

    def _shareable_addrs(self, exclude: Connection) -> list[str]:
        addrs = [c.listen_addr for c in self.conns.values() if c is not exclude and c.listen_addr]
        return sorted(set(addrs))[:64]

    def add_address(self, addr: str) -> None:
        """Dial ``addr`` as a bootstrap peer (reconnect with backoff for as long as we run)."""
        self.book.add(addr, bootstrap=True)

    def _send_all(self, sends: list[Send]) -> None:
        for pid, msg in sends:
            conn = self.conns.get(pid)
            if conn is None:
                continue
            if isinstance(msg, Prune) and not msg.peers:
                # v1.1 peer exchange on prune: a pruned peer learns where else to connect
                msg = Prune(msg.topic, msg.backoff_s, self._shareable_addrs(exclude=conn)[:16])
            conn.send(msg)

    # -- gossip payloads -------------------------------------------------------------------

    def _on_publish(self, conn: Connection, topic: str, data: bytes) -> None:
        assert conn.peer_id is not None
        mid, _rec, first = self.gossip.receive(conn.peer_id, topic, data)
        if not first:
            self.metrics.gossip_duplicates.labels(topic).inc()
            return
        if topic == TOPIC_BLOCKS:
            outcome = self.apply_block(conn, data, "gossip")
            verdict = {"accepted": "accept", "rejected": "reject"}.get(outcome, "ignore")
        elif topic == TOPIC_TXS:
            verdict = self._accept_tx_bytes(data, "gossip", conn)
        elif topic == TOPIC_PRESENCE:
            assert self.presence is not None
            verdict, why = self.presence.on_beacon(data, now_ms())
            if verdict == "reject":
                self.penalize(conn, PENALTY_INVALID, f"invalid presence beacon ({why})")
        else:
            verdict = "reject"
        self._send_all(self.gossip.validated(mid, data, verdict))

    def apply_block(self, conn: Connection | None, raw: bytes, source: str) -> str:
        """Validate and commit one encoded block. Returns accepted | duplicate | orphan |
        ignored | rejected; scores ``conn`` for invalid blocks."""
        assert self.chain is not None
        self.metrics.blocks_received.labels(source).inc()
        t0 = time.perf_counter()
        try:
            block = decode_block(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            self._reject_block(conn, None, "format", f"block does not decode: {e}")
            return "rejected"
        if source == "gossip":
            delay_s = (now_ms() - block.header.timestamp_ms) / 1000
            self.metrics.gossip_first_seen_delay.labels(TOPIC_BLOCKS).observe(max(0.0, delay_s))
            ahead = block.height - self.chain.height
            far = conn is not None and ahead > self.cfg.sync_parallel_min
            # An authentic block far ahead is a verified height claim for sync, not an orphan.
            if far and conn is not None and self.sync.saw_tip(conn, block):
                self.log.info(
                    "block_far_ahead",
                    f"gossiped block {block.height} is {ahead} blocks ahead of our tip: "
                    "syncing to it instead of holding it as an orphan",
                    height=block.height,
                    tip=self.chain.height,
                )
                return "ignored"
        res = self.chain.submit(block, len(raw))
        self.metrics.validation_seconds.labels("block").observe(time.perf_counter() - t0)
        if res.duplicate:
            return "duplicate"
        if res.orphaned:
            self.metrics.orphans.set(len(self.chain.orphans))
            self.log.info(
                "block_orphaned",
                f"block {block.height} {short(block.hash)} held as "
                f"orphan: {res.error.detail if res.error else ''}; requesting the gap",
                height=block.height,
                hash=block.hash.hex(),
                tip=self.chain.height,
            )
            if conn is not None:
                self.sync.request_gap(conn, block.height)
            return "orphan"
        if res.error is not None:
            stale = isinstance(res.error, BadPrevHash) and block.height <= self.chain.height
            self._reject_block(None if stale else conn, block, res.error.reason, res.error.detail)
            if source == "sync" and conn is not None and res.error.reason in FORGERY_REASONS:
                # no honest node stores, so none serves, a block whose hash or producer
                # signature is wrong: a forged sync answer is proof, not a score matter
                self.ban(conn, f"sync: served block {block.height} with a bad {res.error.reason}")
            return "ignored" if stale else "rejected"
        for b in res.accepted:
            self._committed(b, source)
        if conn is not None:
            self.sync.saw_height(conn, res.accepted[-1].height)
        return "accepted"

    def fork_point(self, headers: list[BlockHeader]) -> int | None:
        assert self.chain is not None
        return self.chain.fork_point(headers)

    def note(self, event: str, msg: str, **fields: object) -> None:
        if event.startswith("sync_"):
            self.metrics.sync_events.labels(event.removeprefix("sync_")).inc()
        self.log.warning(event, msg, **fields)

    def apply_branch(self, conn: Connection, raws: list[bytes]) -> str:
        """A peer's competing branch: adopt it if it is longer and valid (fork choice)."""
        assert self.chain is not None
        try:
            blocks = [decode_block(raw) for raw in raws]
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            self._reject_block(conn, None, "format", f"branch block does not decode: {e}")
            return "rejected"
        old_height, old_tip = self.chain.height, self.chain.tip_hash
        res = self.chain.reorg(blocks, self.cfg.max_reorg_depth)
        if res.error is not None:
            # A branch that no longer attaches (its chain moved between our two requests) or
            # is too deep is not misbehaviour; an invalid block in it is.
            honest = res.error.reason in ("orphan", "reorg_depth")
            self._reject_block(
                None if honest else conn,
                None,
                res.error.reason,
                f"competing branch: {res.error.detail}",
            )
            return "ignored" if honest else "rejected"
        if not res.adopted:
            return "ignored"
        self.metrics.reorgs.inc()
        self.metrics.reorg_depth.observe(res.depth)
        self.log.warning(
            "reorg",
            f"switched to a longer branch from peer {short(conn.peer_id or b'')}: tip "
            f"{old_height} {short(old_tip)} -> {self.chain.height} {short(self.chain.tip_hash)}, "
            f"{res.depth} blocks replaced (longest valid chain wins)",
            depth=res.depth,
            old_height=old_height,
            old_tip=old_tip.hex(),
            height=self.chain.height,
            tip=self.chain.tip_hash.hex(),
        )
        for b in res.adopted:
            self._committed(b, "reorg")
        for b in res.dropped:  # their transactions are valid again unless the branch has them
            for tx in b.txs:
                txid = tx.txid()
                if not self.chain.store.has_tx(txid):
                    self.mempool.add(txid, tx, len(tx.encode()))
        self.metrics.mempool_txs.set(len(self.mempool))
        self.sync.saw_height(conn, self.chain.height)
        return "accepted"

    # -- parallel sync host (window_sync.WindowHost) ----------------------------------------

    def ban(self, conn: Connection, reason: str) -> None:
        """Ban at once (a provable offence such as a forged sync segment), whatever the score."""
        pid = conn.peer_id
        if pid is None:
            return
        self.book.ban_peer(pid)
        self.metrics.bans.labels("peer").inc()
        self.log.warning(
            "peer_banned",
            f"banned peer {short(pid)} for {self.cfg.ban_seconds:g} s: {reason}",
            peer=pid.hex(),
            reason=reason,
        )
        conn.close(f"banned: {reason}")

    def committed_segment(self, blocks: list[Block], source: str) -> None:
        assert self.chain is not None
        self.metrics.blocks_validated.inc(len(blocks))
        self.metrics.sync_blocks_committed.inc(len(blocks))
        self.metrics.height.set(self.chain.height)
        self.mempool.remove([t.txid() for b in blocks for t in b.txs])
        self.metrics.mempool_txs.set(len(self.mempool))
        self.log.info(
            "segment_committed",
            f"blocks {blocks[0].height}..{blocks[-1].height} verified in order and committed "
            f"in one transaction from {source}",
            first=blocks[0].height,
            last=blocks[-1].height,
            tip=blocks[-1].hash.hex(),
            source=source,
        )
        # One entropy check for the segment at most: for its last boundary, and only if this
        # segment ended the catch-up (earlier boundaries are history, verified in the segment).
        L = self.genesis.params.epoch_length
        last_boundary = [b for b in blocks if b.height % L == 0][-1:]
        for b in last_boundary or blocks[-1:]:
            self._on_height(b)

    def _on_height(self, b: Block) -> None:
        """Every committed block: an epoch boundary starts an entropy check (not during a bulk
        catch-up — those boundaries are history, verified as part of the segment)."""
        if self.entropy.deferred:
            self.entropy.on_height()
        L = self.genesis.params.epoch_length
        if b.height == 0 or b.height % L or self.sync.active:
            return
        self.entropy.on_boundary(b.height)
        asyncio.get_running_loop().call_later(
            self.cfg.entropy_timeout_ms / 1000 + 0.005, self.entropy.tick
        )

    # -- entropy check host (entropy_check.EntropyHost) ------------------------------------

    def entropy_peers(self) -> list[Connection]:
        return [c for c in self.conns.values() if c.is_open]

    def local_entropy(self, seed_height: int) -> bytes | None:
        """Our entropy hash for the epoch seeded at ``seed_height``: that block's hash."""
        assert self.chain is not None
        got = self._entropy.get(seed_height)
        if got is not None:
            return got
        if seed_height > self.chain.height:
            return None
        h = self.chain.store.hash_at(seed_height)
        if h is None:
            return None
        L = self.genesis.params.epoch_length
        hook = self.cfg.debug_divergent_entropy_epoch
        if hook >= 0 and seed_height == hook * L and not self._entropy_fault_used:
            self._entropy_fault_used = True  # TEST HOOK: diverge once, as a corrupted view would
            h = bytes(x ^ 0xFF for x in h)
            self.log.warning(
                "entropy_divergent",
                f"test hook: our entropy for the epoch seeded at {seed_height} is made divergent",
                seed_height=seed_height,
            )
        self._entropy[seed_height] = h
        for k in sorted(self._entropy)[:-16]:
            del self._entropy[k]
        return h

    def recompute_entropy(self, seed_height: int) -> bytes | None:
        self._entropy.pop(seed_height, None)
        return self.local_entropy(seed_height)

    def stored_hash(self, seed_height: int) -> bytes | None:
        assert self.chain is not None
        return self.chain.store.hash_at(seed_height)

    def authentic(self, block: Block) -> bool:
        return self.sync.authentic(block)

    def resolve_fork_with(self, conn: Connection) -> None:
        self.sync.resolve_fork_with(conn)

    def entropy_event(self, event: str, msg: str, level: str, **fields: object) -> None:
        if event == "entropy_check":

            def n(key: str) -> int:
                v = fields.get(key, 0)
                return v if isinstance(v, int) else 0

            self.metrics.entropy_checks.labels(str(fields.get("outcome"))).inc()
            for vote in ("disagree", "abstain", "no_answer"):
                self.metrics.entropy_votes.labels(vote).inc(n(vote))
            self.metrics.entropy_votes.labels("agree").inc(max(0, n("agree") - 1))  # not ours
        self.metrics.entropy_producing_halted.set(int(self.entropy.halted))
        if level == "info":
            self.log.info(event, msg, **fields)
        else:
            self.log.warning(event, msg, **fields)

    def schedule(self, fn: Callable[[], None]) -> None:
        def guarded() -> None:
            try:
                fn()
            except Exception as e:  # a bug in a sync step must not kill the loop callback
                self.log.error(
                    "internal_error",
                    f"sync step failed: {e!r}",
                    exc=traceback.format_exc(),
                )

        asyncio.get_running_loop().call_soon(guarded)

    def now_ms(self) -> int:
        return now_ms()

    def info(self, event: str, msg: str, **fields: object) -> None:
        self.log.info(event, msg, **fields)

    def _reject_block(
        self, conn: Connection | None, block: Block | None, reason: str, detail: str
    ) -> None:
        self.metrics.blocks_rejected.labels(reason).inc()
        who = short(conn.peer_id) if conn is not None and conn.peer_id else "-"
        self.log.warning(
            "block_rejected",
            f"{detail} (from peer {who})",
            reason=reason,
            height=block.height if block else None,
            hash=block.hash.hex() if block else None,
            peer=conn.peer_id.hex() if conn is not None and conn.peer_id else None,
        )
        if conn is not None:
            self.penalize(conn, PENALTY_INVALID, f"invalid block ({reason})")

    def _committed(self, b: Block, source: str) -> None:
        assert self.chain is not None
        self.metrics.blocks_validated.inc()
        self.metrics.height.set(self.chain.height)
        self.metrics.orphans.set(len(self.chain.orphans))
        self.mempool.remove([t.txid() for t in b.txs])
        self.metrics.mempool_txs.set(len(self.mempool))
        self._on_height(b)
        self.log.info(
            "block_committed",
            f"block {b.height} {short(b.hash)} committed from "
            f"{source}: producer {short(b.header.producer)}, {len(b.txs)} txs",
            height=b.height,
            hash=b.hash.hex(),
            producer=b.header.producer.hex(),
            txs=len(b.txs),
            source=source,
        )

    def _accept_tx_bytes(self, data: bytes, source: str, conn: Connection | None) -> str:
        self.metrics.txs_received.labels(source).inc()
        try:
            tx = decode_tx(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            self._reject_tx(conn, "format", f"tx does not decode: {e}")
            return "reject"
        return self.accept_tx(tx, source, conn, len(data))

    def accept_tx(self, tx: Tx, source: str, conn: Connection | None, size: int) -> str:
        """Validate a transaction into the mempool. Returns accept | ignore | reject."""
        assert self.chain is not None
        t0 = time.perf_counter()
        if source == "gossip":
            self.metrics.gossip_first_seen_delay.labels(TOPIC_TXS).observe(
                max(0.0, (now_ms() - tx.timestamp_ms) / 1000)
            )
        try:
            check_tx(tx, self.genesis.params, size)
        except ValidationError as e:
            self._reject_tx(conn, e.reason, e.detail)
            return "reject"
        finally:
            self.metrics.validation_seconds.labels("tx").observe(time.perf_counter() - t0)
        txid = tx.txid()
        if self.chain.store.has_tx(txid) or txid in self.mempool:
            return "ignore"
        if not self.mempool.add(txid, tx, size):
            self.metrics.limit_hits.labels("mempool").inc()
            return "ignore"
        self.metrics.txs_validated.inc()
        self.metrics.mempool_txs.set(len(self.mempool))
        self.log.debug(
            "tx_accepted",
            f"tx {short(txid)} accepted into the mempool from {source}",
            txid=txid.hex(),
            source=source,
        )
        return "accept"

    def _reject_tx(self, conn: Connection | None, reason: str, detail: str) -> None:
        self.metrics.txs_rejected.labels(reason).inc()
        self.log.info(
            "tx_rejected",
            f"tx rejected: {detail}",
            reason=reason,
            peer=conn.peer_id.hex() if conn is not None and conn.peer_id else None,
        )
        if conn is not None:
            self.penalize(conn, PENALTY_INVALID, f"invalid tx ({reason})")

    def submit_local_tx(self, tx: Tx) -> tuple[str, bytes]:
        """POST /tx: validate, add to the mempool, publish to the mesh."""
        data = tx.encode()
        verdict = self.accept_tx(tx, "api", None, len(data))
        if verdict == "accept":
            _, sends = self.gossip.publish(TOPIC_TXS, data)
            self._send_all(sends)
        return verdict, tx.txid()

    # -- periodic work ---------------------------------------------------------------------

    async def _every(self, name: str, interval_s: float, step: Callable[[], None]) -> None:
        """Run ``step`` every ``interval_s``. An exception is logged and the loop goes on: a
        failing disk or a bug in one round must not silently stop production or the heartbeat."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                step()
            except Exception as e:
                self.log.error(
                    "internal_error",
                    f"{name} step failed: {e!r}; retrying",
                    loop=name,
                    exc=traceback.format_exc(),
                )

    def _heartbeat_step(self) -> None:
        self._send_all(self.gossip.heartbeat())
        now = self.clock()
        self.book.expire()
        for conn in list(self.conns.values()):
            if now - conn.last_recv > self.cfg.ping_interval_s:
                conn.send(Ping(int(now * 1000)))

    def _sync_step(self) -> None:
        self.sync.tick()
        self.entropy.tick()
        self.metrics.sync_distance.set(max(0, self.sync.head_height() - self.height))
        for ph in ("discovering", "downloading", "verifying", "committing", "following"):
            self.metrics.sync_phase.labels(ph).set(int(ph == self.sync.phase))

    def _status_step(self) -> None:
        assert self.chain is not None
        st = Status(self.chain.height, self.chain.tip_hash, self.chain.genesis_hash)
        for conn in list(self.conns.values()):
            conn.send(st)

    def synchronized(self) -> bool:
        return self.sync.synchronized()

    def _beacon_step(self) -> None:
        """Tell the validator set we are alive (signed, fresh, gossiped through the mesh)."""
        assert self.chain is not None
        data = make_beacon(self.identity, self.chain.genesis_hash, now_ms())
        _, sends = self.gossip.publish(TOPIC_PRESENCE, data)
        self._send_all(sends)

    def validators_reachable(self) -> int:
        """Other validators we are connected to or heard a fresh beacon from."""
        assert self.presence is not None
        return len(self.presence.reachable(set(self.conns), self.node_id))

    def quorum_connected(self) -> bool:
        """May we produce? Default: we hear from a strict majority of the validator set
        (counting ourselves) — directly connected, or through a fresh signed presence beacon
        gossiped across the mesh, so the rule scales past the dial target. Two groups cannot
        both hear a majority (beyond one beacon window), so validators that start apart, or
        are split by a partition, cannot build competing chains; a minority waits."""
        if self.cfg.min_peers_to_produce >= 0:
            return len(self.conns) >= self.cfg.min_peers_to_produce
        return 1 + self.validators_reachable() > len(self.genesis.validators) // 2

    def _maybe_produce(self) -> None:
        chain = self.chain
        assert chain is not None
        if not self.quorum_connected() or not self.synchronized():
            return
        if not self.entropy.may_produce:
            return  # a failed entropy check: we may disagree on who produces
        now = now_ms()
        if now < chain.tip.header.timestamp_ms + self.genesis.params.slot_ms:
            return
        producer, height, round_ = chain.scheduled_producer(now)
        if producer != self.node_id or (height, round_) in self.produced:
            return
        self.produced = {x for x in self.produced if x[0] >= height}  # bounded: this height only
        self.produced.add((height, round_))
        p = self.genesis.params
        candidates = self.mempool.take(p.max_block_txs, p.max_block_bytes - 4096)
        txs = [t for t in candidates if not chain.store.has_tx(t.txid())]
        block = make_block(self.identity, self.genesis.network_id, height, chain.tip_hash, now, txs)
        res = chain.submit(block)
        if res.error is not None:
            self.log.error(
                "produce_failed",
                f"own block {height} failed validation: {res.error.detail}",
                reason=res.error.reason,
                height=height,
            )
            return
        self.metrics.blocks_produced.inc()
        for b in res.accepted:
            self._committed(b, "local")
        _, sends = self.gossip.publish(TOPIC_BLOCKS, block.encode())
        self._send_all(sends)
        self.log.info(
            "block_produced",
            f"produced block {height} round {round_} with "
            f"{len(txs)} txs: our slot by entropy {short(chain.seed_hash(height))}",
            height=height,
            round=round_,
            txs=len(txs),
            hash=block.hash.hex(),
        )

    # -- views for the API -----------------------------------------------------------------

    def status(self) -> dict[str, object]:
        assert self.chain is not None
        out = sum(c.outbound for c in self.conns.values())
        return {
            "node_id": self.node_id.hex(),
            "network_id": self.genesis.network_id,
            "genesis_hash": self.chain.genesis_hash.hex(),
            "height": self.chain.height,
            "tip_hash": self.chain.tip_hash.hex(),
            "tip_timestamp_ms": self.chain.tip.header.timestamp_ms,
            "peers": len(self.conns),
            "peers_outbound": out,
            "peers_inbound": len(self.conns) - out,
            "uptime_s": round(self.clock() - self.started_at, 3),
            "synchronized": self.synchronized(),
            "sync_distance": max(0, self.sync.head_height() - self.chain.height),
            "head_height": self.sync.head_height(),
            "sync_phase": self.sync.phase,
            "sync": self.sync.view(),
            "entropy_check": self.entropy.view(),
            "validator_quorum": self.quorum_connected(),
            "banned_peers": sorted(
                pid.hex() for pid in self.book.banned if self.book.peer_banned(pid)
            ),
            "validators_reachable": self.validators_reachable(),
            "best_peer_height": self.sync.best_peer_height(),
            "validator": self.is_validator,
            "mempool_txs": len(self.mempool),
            "orphan_blocks": len(self.chain.orphans),
            "p2p_port": self.listen_port,
            "tls": self.cfg.tls,
            "pid": os.getpid(),
        }

    def peers(self) -> list[dict[str, object]]:
        now = self.clock()
        return [
            {
                "peer_id": pid.hex(),
                "address": c.address,
                "listen_addr": c.listen_addr,
                "direction": c.direction,
                "mesh": self.gossip.mesh_topics(pid),
                "score": round(self.gossip.score(pid), 3),
                "socket_cookie": c.cookie,
                "tls": c.tls,
                "height": self.sync.peer_height.get(c),
                "connected_s": round(now - c.connected_at, 3),
            }
            for pid, c in sorted(self.conns.items())
        ]

    def message_stats(self, mid: bytes) -> dict[str, object] | None:
        rec = self.gossip.seen.get(mid)
        if rec is None:
            return None
        age_s = self.clock() - rec.first_seen
        # Absolute first-seen time on CLOCK_MONOTONIC: one clock for every node on this host,
        # so a bench can compare nodes without the request's round trip in the error.
        mono_ns = (
            round(rec.first_seen * 1e9)
            if self.clock is time.monotonic
            else time.monotonic_ns() - round(age_s * 1e9)
        )
        return {
            "topic": rec.topic,
            "first_seen_age_s": round(age_s, 6),
            "first_seen_monotonic_ns": mono_ns,
            "duplicates": rec.duplicates,
            "first_peer": rec.first_peer.hex() if rec.first_peer else None,
            "verdict": rec.verdict,
        }


async def run_node(cfg: NodeConfig, log: NodeLog) -> None:
    node = Node(cfg, log)
    await node.run_until_signal()


def main_loop(cfg: NodeConfig, log: NodeLog) -> None:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_node(cfg, log))
