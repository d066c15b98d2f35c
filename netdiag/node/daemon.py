"""The node's asyncio shell: sockets, TLS, timers, the API server and the store's lifetime.

All decisions live in the sans-IO ``NodeCore`` (core.py); this shell accepts and dials
connections, runs each ``transport.Connection`` with the core as its handler, drives the
core's periodic steps, and hands the core a real clock and the loop as its scheduler.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import signal
import ssl
import time
import traceback
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from netdiag.node import tls
from netdiag.node.api import start_api, stop_api
from netdiag.node.apiguard import ApiLimits
from netdiag.node.apithread import SNAPSHOT_S, ApiThread, ThreadedView
from netdiag.node.chain import Chain
from netdiag.node.config import NodeConfig, split_hostport
from netdiag.node.core import NodeCore
from netdiag.node.entropy_check import EntropyCheck
from netdiag.node.genesis import GenesisSpec
from netdiag.node.gossip import GossipRouter
from netdiag.node.limits import TokenBucket
from netdiag.node.link import Link
from netdiag.node.logs import NodeLog
from netdiag.node.mempool import Mempool
from netdiag.node.metrics import NodeMetrics
from netdiag.node.model import Block, Tx
from netdiag.node.networks import resolve_genesis
from netdiag.node.node_keys import load_entropy_chain, load_or_make_identity
from netdiag.node.peer_dns import PeerDns
from netdiag.node.peers import PeerBook
from netdiag.node.presence import Presence
from netdiag.node.protocol import PeerProtocol
from netdiag.node.resources import HeapTrimmer, resolve_limits, trim_heap
from netdiag.node.runtime import Clock, LoopScheduler, SystemClock
from netdiag.node.sigpool import SigPool
from netdiag.node.tlsio import TlsSession
from netdiag.node.transport import Connection
from netdiag.node.views import CoreView
from netdiag.node.window_sync import ParallelSync
from netdiag.node.writer import WriteBehindStore

MAX_IP_BUCKETS = 4096
TRIM_CHECK_S = 5.0  # how often a burst of inbound connections is looked for (HeapTrimmer)


def short(b: bytes) -> str:
    return b[:6].hex()


class Node:
    def __init__(self, cfg: NodeConfig, log: NodeLog, clock: Clock | None = None) -> None:
        self.cfg = cfg
        self.log = log
        self.clock: Clock = clock or SystemClock()
        self.metrics = NodeMetrics()
        self.data_dir = Path(cfg.data_dir)
        self.genesis: GenesisSpec = resolve_genesis(cfg.network, cfg.genesis)
        self.identity = load_or_make_identity(cfg, self.data_dir)
        self.node_id = self.identity.node_id
        self.is_validator = self.node_id in self.genesis.validators
        self.entropy_chain = load_entropy_chain(cfg, self.genesis, self.node_id, log)
        self._core: NodeCore | None = None  # made in start(): it needs the opened store
        self._view: CoreView | None = None
        self.listen_port = 0
        self.api_port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._conn_tasks: set[asyncio.Task[Any]] = set()  # inbound handlers, owned by the server
        self._stopping = asyncio.Event()
        self._ssl_server: ssl.SSLContext | None = None
        self._ssl_client: ssl.SSLContext | None = None
        self._api_runner: object | None = None
        self._api_thread = ApiThread()
        self._stopped = False
        self._api_view: ThreadedView | None = None
        # started on the first batch worth it (a sync segment), from the loop's thread: a
        # cluster of small-block nodes on one host never starts any
        self._sigs = SigPool(cfg.verify_workers, on_error=self._no_workers)
        self._ip_buckets: dict[str, TokenBucket] = {}  # inbound messages per remote IP
        self._trimmer = HeapTrimmer()

    # -- the core and its parts (for the CLI, tests and the API view) ----------------------

    @property
    def core(self) -> NodeCore:
        assert self._core is not None, "node not started"
        return self._core

    @property
    def chain(self) -> Chain:
        return self.core.chain

    @property
    def height(self) -> int:
        return self.core.height

    @property
    def conns(self) -> dict[bytes, Link]:
        return self.core.conns

    @property
    def pending(self) -> set[Link]:
        return self.core.peering.pending

    @property
    def book(self) -> PeerBook:
        return self.core.book

    @property
    def gossip(self) -> GossipRouter:
        return self.core.gossip

    @property
    def sync(self) -> ParallelSync:
        return self.core.sync

    @property
    def entropy(self) -> EntropyCheck:
        return self.core.entropy

    @property
    def presence(self) -> Presence:
        return self.core.presence

    @property
    def mempool(self) -> Mempool:
        return self.core.mempool

    def synchronized(self) -> bool:
        return self.core.synchronized()

    def quorum_connected(self) -> bool:
        return self.core.quorum_connected()

    def status(self) -> dict[str, object]:
        assert self._view is not None
        return self._view.status()

    def peers(self) -> list[dict[str, object]]:
        assert self._view is not None
        return self._view.peers()

    def block_at(self, height: int) -> Block | None:
        assert self._view is not None
        return self._view.block_at(height)

    def submit_local_tx(self, tx: Tx) -> tuple[str, bytes]:
        return self.core.ingest.submit_local_tx(tx)

    def add_address(self, addr: str) -> None:
        """Dial ``addr`` as a bootstrap peer (reconnect with backoff for as long as we run)."""
        self.core.book.add(addr, bootstrap=True)

    # -- lifecycle (keys: node_keys.py) ---------------------------------------------------

    def _make_core(self, chain: Chain) -> NodeCore:
        limits = resolve_limits(self.cfg)
        if limits.max_inbound < self.cfg.max_inbound:
            self.log.warning(
                "fd_limit",
                f"RLIMIT_NOFILE {limits.fd_limit} fits {limits.max_inbound} inbound connections, "
                f"not max_inbound {self.cfg.max_inbound}: using {limits.max_inbound}",
                fd_limit=limits.fd_limit,
                max_inbound=limits.max_inbound,
            )
        return NodeCore(
            self.cfg,
            self.log,
            self.metrics,
            self.identity,
            self.genesis,
            chain,
            self.clock,
            LoopScheduler(),
            self.entropy_chain,
            limits,
            self._sigs,
        )

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        # commits go to the store's writer thread; the core hears when each is on disk
        store = WriteBehindStore(
            self.data_dir / "chain.sqlite", loop.call_soon_threadsafe, on_failed=self._store_failed
        )
        chain = Chain(store, self.genesis, self.clock.wall_ms, self.cfg.orphan_max)
        core = self._core = self._make_core(chain)
        store.on_done = core.store_durable
        self.metrics.durable_height.set(chain.height)
        self._view = CoreView(core, self.cfg.tls)
        if self.cfg.tls:
            cert, key = tls.write_certificate(self.identity, self.data_dir / "tls")
            self._ssl_server = tls.server_context(cert, key)
            self._ssl_client = tls.client_context(cert, key)
        host, port = split_hostport(self.cfg.listen)
        # Plain TCP: TLS runs inside each Connection (tlsio), so a socket counts against the
        # limits from accept() and a failed TLS handshake is seen, bounded and counted.
        self._server = await asyncio.start_server(self._on_inbound, host, port, limit=1 << 16)
        self.listen_port = core.listen_port = self._server.sockets[0].getsockname()[1]
        # The API runs on its own thread and loop: it answers while this loop is busy.
        self._api_view = ThreadedView(self._view, asyncio.get_running_loop(), chain.store.path)
        self._api_view.refresh()
        self._api_runner, self.api_port = await self._api_thread.start(
            start_api(
                self._api_view,
                self.cfg.api,
                ApiLimits(
                    self.cfg.api_header_timeout_s,
                    self.cfg.api_write_timeout_s,
                    self.cfg.api_max_connections,
                ),
                lambda limit: self.metrics.limit_hits.labels(limit).inc(),  # thread-safe
            )
        )
        if core.onboarding.active:  # a snapshot join checks its headers on the workers
            self._sigs.start_soon()
        self._spawn(self._every("api_snapshot", SNAPSHOT_S, self._api_view.refresh))
        self._spawn(self._every("dial", 0.2, self._dial_step))
        self._spawn(self._every("discovery", 1.0, core.discovery_step))
        if self.cfg.peer_dns:
            dns = PeerDns(self.cfg.peer_dns, core.book, self.log)
            self._spawn(dns.run(self.cfg.peer_dns_interval_s))
        self._spawn(self._every("heartbeat", self.cfg.gossip_heartbeat_s, core.heartbeat_step))
        self._spawn(self._every("status", self.cfg.status_interval_s, core.status_step))
        self._spawn(self._every("sync", 0.25, core.sync_step))  # timeouts start at 2 s
        self._spawn(self._every("heap_trim", TRIM_CHECK_S, self._trim_step))
        if self.cfg.produce and self.is_validator:  # check ten times a slot
            tick_s = max(0.01, self.genesis.params.slot_ms / 10_000)
            self._spawn(self._every("producer", tick_s, core.produce_step))
        if self.is_validator:  # a validator that does not produce is still part of the quorum
            self._spawn(self._every("presence", self.cfg.presence_interval_s, core.beacon_step))
        self.log.info(
            "node_started",
            f"node {short(self.node_id)} up at height {chain.height} "
            f"({'validator' if self.is_validator else 'observer'}), p2p {host}:{self.listen_port} "
            f"tls={'on' if self.cfg.tls else 'off'}, api 127.0.0.1:{self.api_port}",
            node_id=self.node_id.hex(),
            height=chain.height,
            tip=chain.tip_hash.hex(),
            p2p_port=self.listen_port,
            api_port=self.api_port,
            genesis=chain.genesis_hash.hex(),
            validator=self.is_validator,
            tls=self.cfg.tls,
        )

    def _no_workers(self, why: str) -> None:
        self.log.warning(
            "verify_workers", f"signature workers did not start ({why}): verifying on the loop"
        )

    def _store_failed(self, e: BaseException) -> None:
        """The disk refused a commit the chain holds in memory: they disagree, so stop (the
        restart checks the store and syncs what is missing)."""
        self.log.error("store_failed", f"block store write failed: {e!r}; stopping the node")
        self._stopping.set()

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
        """Close peers, API and store; a second call does nothing."""
        if self._stopped:
            return
        self._stopped = True
        core = self._core
        if core is not None:
            for conn in [*core.conns.values(), *core.peering.pending]:
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
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._api_thread.run(stop_api(self._api_runner)), 5.0)
        self._api_thread.stop()
        if self._api_view is not None:
            self._api_view.close()
        if core is not None:
            core.close()
            await asyncio.to_thread(core.chain.store.close)  # the writer drains its queue
        await asyncio.to_thread(self._sigs.close)
        self.log.info(
            "node_stopped",
            f"node {short(self.node_id)} stopped cleanly at height {core.height if core else 0}",
        )

    # -- connections -----------------------------------------------------------------------

    def _new_conn(
        self,
        r: asyncio.StreamReader,
        w: asyncio.StreamWriter,
        outbound: bool,
        dialed: str | None = None,
        probe: bool = False,
    ) -> Connection:
        proto = PeerProtocol(
            self.identity,
            self.genesis.network_id,
            self.chain.genesis_hash,
            # a probe announces no listen port: the remote never takes it for our side of a
            # simultaneous dial (peering.Peering.replaces)
            0 if probe else self.listen_port,
            self.cfg.max_frame_bytes,
        )
        conn = Connection(
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
            tls=self._tls_session(outbound),
            budget=self.core.memory,
            ip_msgs=None if outbound else self._ip_msgs(w),
            send_priority=self.cfg.send_priority,
            notsent_lowat=self.cfg.notsent_lowat_bytes,
            write_stall_timeout_s=self.cfg.write_stall_timeout_s,
        )
        conn.probe = probe
        return conn

    def _trim_step(self) -> None:
        if self._trimmer.due():
            done = asyncio.get_running_loop().run_in_executor(None, trim_heap)
            done.add_done_callback(self._trimmed)

    def _trimmed(self, f: asyncio.Future[int | None]) -> None:
        if not f.cancelled() and f.exception() is None:
            self._trimmer.trimmed(f.result())

    def _ip_msgs(self, w: asyncio.StreamWriter) -> TokenBucket | None:
        """The message bucket every inbound connection from this remote IP shares."""
        rate = self.cfg.ip_msg_rate
        if rate <= 0:
            return None
        host = str((w.get_extra_info("peername") or ("?",))[0])
        if len(self._ip_buckets) >= MAX_IP_BUCKETS:  # forget idle (full) ones
            for ip, b in list(self._ip_buckets.items()):
                if b.wait_time(0) == 0 and b.tokens >= b.burst:
                    del self._ip_buckets[ip]
        bucket = self._ip_buckets.get(host)
        if bucket is None:
            bucket = self._ip_buckets[host] = TokenBucket(rate, 2 * rate, time.monotonic)
        return bucket

    def _tls_session(self, outbound: bool) -> TlsSession | None:
        ctx = self._ssl_client if outbound else self._ssl_server
        return TlsSession(ctx, server_side=not outbound) if ctx is not None else None

    async def _on_inbound(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        peer = w.get_extra_info("peername") or ("?", 0)
        if self.core.peering.refuse_inbound(str(peer[0]), f"{peer[0]}:{peer[1]}"):
            w.transport.abort()  # nothing allocated for it; the fd goes at once
            return
        conn = self._new_conn(r, w, outbound=False)
        self._trimmer.accepted += 1
        self.core.peering.handshaking(conn)
        task = asyncio.current_task()
        if task is not None:
            self._conn_tasks.add(task)
        try:
            await conn.run(self.core)
        finally:
            if task is not None:
                self._conn_tasks.discard(task)

    async def _dial(self, addr: str, probe: bool = False) -> None:
        """Dial a peer, or (``probe``) a short-lived discovery probe that takes no slot."""
        core = self.core
        if not probe:
            self.book.dialing.add(addr)
        try:
            host, port = split_hostport(addr)
            try:
                r, w = await asyncio.wait_for(
                    asyncio.open_connection(
                        host,
                        port,
                        limit=1 << 16,
                        local_addr=self._source_for(host),
                    ),
                    self.cfg.handshake_timeout_s,
                )
            except (OSError, TimeoutError) as e:
                core.dial_ended(addr, None, f"connect failed: {e!r}", probe)
                return
            conn = self._new_conn(r, w, outbound=True, dialed=addr, probe=probe)
            core.peering.pending.add(conn)
            await conn.run(core)
            core.dial_ended(addr, conn.peer_id, conn.close_reason or "handshake failed", probe)
        finally:
            if not probe:
                self.book.dialing.discard(addr)

    def _source_for(self, host: str) -> tuple[str, int] | None:
        return dial_source(split_hostport(self.cfg.listen)[0], host)

    def _dial_step(self) -> None:
        core = self.core
        for addr in core.dial_targets(self.listen_port):
            self._spawn(self._dial(addr))
        for addr in core.probe_targets():
            self._spawn(self._dial(addr, probe=True))

    async def _every(self, name: str, interval_s: float, step: Callable[[], None]) -> None:
        """Run ``step`` every ``interval_s``. An exception is logged and the loop goes on: a
        failing disk or a bug in one round must not silently stop production or the heartbeat."""
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + interval_s
            await asyncio.sleep(interval_s)
            self.metrics.loop_lag_seconds.observe(max(0.0, loop.time() - due))
            try:
                step()
            except Exception as e:
                self.log.error(
                    "internal_error",
                    f"{name} step failed: {e!r}; retrying",
                    loop=name,
                    exc=traceback.format_exc(),
                )


async def run_node(cfg: NodeConfig, log: NodeLog) -> None:
    node = Node(cfg, log)
    await node.run_until_signal()


def main_loop(cfg: NodeConfig, log: NodeLog) -> None:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_node(cfg, log))


def dial_source(listen_host: str, host: str) -> tuple[str, int] | None:
    """Dial from the address we listen on when it is one address (not a wildcard) of the same
    family and scope (loopback or not) as the peer's: the peer sees the address it can dial
    back (the discovery dial-back checks the listen port at the connection's address) and the
    per-/24 rules see where we listen. A host with several addresses — many nodes on
    127.0.0.0/8, or a lab namespace holding several identities — would otherwise dial from
    whichever one the route picks. A wildcard listen address dials from the route's choice."""
    try:
        mine, theirs = ipaddress.ip_address(listen_host), ipaddress.ip_address(host)
    except ValueError:
        return None
    if mine.is_unspecified or mine.version != theirs.version:
        return None
    if mine.is_loopback != theirs.is_loopback:
        return None
    return (listen_host, 0)
