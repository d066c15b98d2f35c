"""Progressive onboarding: a fresh node starts from a peer's snapshot instead of replaying.

In this order, each step verified before the next (docs/node.md, "Onboarding"): wait for
announcements (else fall back to replay); the signed header chain 1..H, checked as headers
(signatures, producer schedule, entropy); the manifest, anchored in header H; the chunks, in
parallel from every source with per-peer windows and adaptive timeouts, each checked on
arrival and kept on disk (a restart resumes without refetching them; a bad chunk bans its
server); block H; then state and base installed in one transaction, the blocks after H by
ordinary sync, and history below H backfilled downwards while synchronized.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from netdiag.node.link import Link
from netdiag.node.messages import (
    Blocks,
    ChunkData,
    GetBlocks,
    GetChunk,
    GetSnapshot,
    HeaderChain,
    Message,
    SnapshotManifest,
)
from netdiag.node.model import decode_single_block, merkle_root
from netdiag.node.onboard_backfill import Backfill
from netdiag.node.onboard_headers import fill_headers, on_header_chain
from netdiag.node.onboard_state import (
    ACTIVE,
    REQ_BASE,
    OnboardHost,
    OnboardStats,
    Pending,
    SignedHeader,
    Source,
    onboard_view,
)
from netdiag.node.sigpool import SigCheck, SigPool
from netdiag.node.snapshot import (
    BadSnapshot,
    Manifest,
    SnapshotStore,
    check_chunk,
    check_manifest,
    decode_manifest,
)
from netdiag.node.snapshot_gossip import Availability, SnapKey
from netdiag.node.window_state import WindowParams, short


class Onboarding:
    def __init__(
        self,
        host: OnboardHost,
        avail: Availability,
        snaps: SnapshotStore,
        clock: Callable[[], float],
        wall_ms: Callable[[], int],
        params: WindowParams,
        wait_s: float,
        enabled: bool,
        sigs: SigPool | None = None,
        min_sources: int = 1,
    ) -> None:
        self.min_sources = min_sources
        self.sigs = sigs
        self.host = host
        self.avail = avail
        self.snaps = snaps
        self.clock = clock
        self.wall_ms = wall_ms
        self.p = params
        self.wait_s = wait_s
        self.stats = OnboardStats(started=clock())
        chain = host.chain
        fresh = chain.height == 0 and chain.store.base_height() == 0
        self.phase = "waiting" if enabled and fresh else "off"
        self.target: SnapKey | None = None
        self.sources: dict[bytes, Source] = {}
        self.pending: dict[int, Pending] = {}
        self._ids = iter(range(REQ_BASE, REQ_BASE + (1 << 40)))
        # header chain state
        # height -> (it, sender, its signature check)
        self.headers_buf: dict[int, tuple[SignedHeader, Link, SigCheck]] = {}
        self.sig_wait: set[SigCheck] = set()  # header signatures at the sigpool now
        self.sig_ok: set[SigCheck] = set()  # ... that it verified, their headers not yet checked
        g = chain.genesis.block()
        self.parent = SignedHeader(g.header, g.hash, b"")
        self.parent_seed = g.hash
        self.seeds: dict[int, bytes] = {0: g.hash}
        self.target_header: SignedHeader | None = None
        # snapshot state
        self.manifest: Manifest | None = None
        self.todo: list[int] = []  # chunk indices still to fetch
        self.have: set[int] = set()
        self.backfill = Backfill(
            host, self.stats, clock, self.pending, self._ids, params.timeout_max_s
        )

    @property
    def active(self) -> bool:
        return self.phase in ACTIVE

    # -- driving ---------------------------------------------------------------------------

    def tick(self) -> None:
        now = self.clock()
        for rid, r in list(self.pending.items()):
            if now > r.deadline:
                del self.pending[rid]
                self._timed_out(r, now)
        if self.phase == "waiting":
            self._pick_snapshot(now)
            return
        if self.active and self.target is not None:
            self._add_sources(self.target)
        if self.phase == "headers":
            self._fill_headers()
        elif self.phase == "chunks":
            self._fill_chunks()
        elif self.phase in ("manifest", "block") and not self._kind_pending(self.phase):
            self._ask_one(self.phase)
        elif self.phase == "done":
            self.backfill.step()

    def on_announce(self, data: bytes, now_ms: int) -> tuple[str, str]:
        """A gossiped announcement (``Availability.on_announce``'s verdict); while waiting,
        the snapshot is chosen at once rather than at the next tick (up to 0.25 s later),
        and a holder announcing it later becomes a source at once too."""
        verdict = self.avail.on_announce(data, now_ms)
        if verdict[0] == "accept" and self.phase == "waiting":
            self._pick_snapshot(self.clock())
        elif verdict[0] == "accept" and self.active and self.target is not None:
            self._add_sources(self.target)
        return verdict

    def _pick_snapshot(self, now: float) -> None:
        L = self.host.chain.params.epoch_length
        connected = set(self.host.conns)
        best = None
        for key, nodes in self.avail.holders.items():
            live = set(nodes) & connected
            if live and key[0] % L == 0 and (best is None or key[0] > best[0][0]):
                best = (key, live)
        waited = now - self.stats.started >= self.wait_s
        if best is not None and len(best[1]) < self.min_sources and not waited:
            return  # more holders may announce: wait for them, up to wait_s
        if best is None:
            if waited:
                why = (
                    "no peer announced a snapshot"
                    if not self.avail.holders
                    else "no connected peer holds an announced snapshot at an epoch boundary"
                )
                self.stats.fallback = why
                self.phase = "replay"
                self.host.info(
                    "snapshot_fallback",
                    f"no snapshot to start from after {self.wait_s:g} s ({why}): replaying "
                    "the chain from genesis",
                    reason=why,
                )
            return
        self.target, holders = best
        self._add_sources(self.target)
        self.stats.selected_at = now
        self.phase = "headers"
        self.host.info(
            "snapshot_selected",
            f"starting from the snapshot at {self.target[0]} (block "
            f"{short(self.target[1])}) held by {len(holders)} peers: headers first",
            height=self.target[0],
            sources=len(holders),
        )
        self._fill_headers()

    def _add_sources(self, key: SnapKey) -> None:
        """Every connected holder of the snapshot is a source, also one whose announcement
        arrived after the choice (a banned peer is disconnected, so never taken back)."""
        for nid in self.avail.holders.get(key, ()):
            conn = self.host.conns.get(nid)
            if nid not in self.sources and conn is not None and conn.is_open:
                self.sources[nid] = Source(conn, timeout_s=self.p.timeout_min_s)

    # -- requests --------------------------------------------------------------------------

    def _live_sources(self) -> list[Source]:
        out = []
        for nid, s in list(self.sources.items()):
            conn = self.host.conns.get(nid)
            if conn is None or not conn.is_open:
                del self.sources[nid]
                continue
            s.conn = conn
            out.append(s)
        if not out and self.active and self.phase != "waiting":
            self._restart("every source of the snapshot is gone")
        return out

    def _restart(self, why: str) -> None:
        self.host.note("snapshot_restart", f"onboarding restarts: {why}", reason=why)
        self.phase = "waiting"
        self.stats.started = self.clock()
        self.avail.holders.pop(self.target, None) if self.target else None
        self.target = None
        self.pending.clear()

    def _send(self, s: Source, kind: str, key: int, msg_of: Callable[[int], Message]) -> None:
        rid = next(self._ids)
        now = self.clock()
        self.pending[rid] = Pending(s.conn, kind, key, now, now + s.timeout_s)
        s.inflight += 1
        s.conn.send(msg_of(rid))

    def _pick(self) -> Source | None:
        cands = [s for s in self._live_sources() if s.inflight < self.p.per_peer]
        return min(cands, key=lambda s: (s.inflight, s.timeout_s)) if cands else None

    def _kind_pending(self, kind: str, key: int | None = None) -> bool:
        return any(r.kind == kind and (key is None or r.key == key) for r in self.pending.values())

    def _timed_out(self, r: Pending, now: float) -> None:
        s = self._source_of(r.conn)
        if s is not None:
            s.inflight = max(0, s.inflight - 1)
            s.timeout_s = min(self.p.timeout_max_s, s.timeout_s * 2)
        self.host.penalize(r.conn, 2.0, f"snapshot {r.kind} request stalled")
        if r.kind == "chunk":
            self.stats.chunk_retries += 1
            self.todo.append(r.key)
        elif r.kind == "backfill":
            self.backfill.timed_out(r)

    def _source_of(self, conn: Link) -> Source | None:
        return self.sources.get(conn.peer_id or b"")

    def _take(self, conn: Link, req_id: int, kind: str) -> Pending | None:
        r = self.pending.get(req_id)
        if r is None or r.conn is not conn or r.kind != kind:
            return None
        del self.pending[req_id]
        s = self._source_of(conn)
        if s is not None:
            s.inflight = max(0, s.inflight - 1)
            if self.clock() <= r.deadline:
                s.timeout_s = max(self.p.timeout_min_s, s.timeout_s / 2)
        return r

    def owns(self, req_id: int) -> bool:
        return req_id in self.pending

    # -- headers (onboard_headers.py) ------------------------------------------------------

    def _fill_headers(self) -> None:
        fill_headers(self)

    def on_header_chain(self, conn: Link, msg: HeaderChain) -> None:
        on_header_chain(self, conn, msg)

    # -- manifest, block -------------------------------------------------------------------

    def _ask_one(self, kind: str) -> None:
        assert self.target is not None
        s = self._pick()
        if s is None:
            return
        h = self.target[0]
        if kind == "manifest":
            self._send(s, "manifest", h, partial(GetSnapshot, height=h))
        else:
            self._send(s, "block", h, partial(GetBlocks, start=h, count=1))

    def on_manifest(self, conn: Link, msg: SnapshotManifest) -> None:
        r = self._take(conn, msg.req_id, "manifest")
        if r is None or self.target_header is None or self.target is None:
            self.host.penalize(conn, 5.0, "unsolicited snapshot manifest")
            return
        try:
            m = decode_manifest(msg.manifest)
            check_manifest(m, self.target_header.header, self.host.chain.genesis.network_id)
            if m.id() != self.target[2]:
                raise BadSnapshot("manifest is not the one its holders announced")
        except BadSnapshot as e:
            self.host.ban(conn, f"snapshot: {e.detail}")
            self._ask_one("manifest")
            return
        self.stats.bytes_fetched += len(msg.manifest)
        self.manifest = m
        self.todo = []
        for i, ref in enumerate(m.chunks):
            data = self.snaps.chunk(ref.id)
            if data is not None:
                try:
                    check_chunk(m, i, data)
                    self.have.add(i)
                    self.stats.chunks_resumed += 1
                    continue
                except BadSnapshot:
                    self.snaps.chunk_path(ref.id).unlink(missing_ok=True)
            self.todo.append(i)
        self.todo.reverse()  # pop() takes the lowest index first
        self.phase = "chunks"
        self.host.info(
            "snapshot_manifest",
            f"manifest at {m.height} anchored: {len(m.chunks)} chunks "
            f"({self.stats.chunks_resumed} already verified on disk)",
            chunks=len(m.chunks),
            resumed=self.stats.chunks_resumed,
        )
        self._fill_chunks()

    # -- chunks ----------------------------------------------------------------------------

    def _fill_chunks(self) -> None:
        m = self.manifest
        assert m is not None
        if len(self.have) == len(m.chunks):
            self._chunks_done()
            return
        while self.todo:
            s = self._pick()
            if s is None:
                return
            i = self.todo.pop()
            if i in self.have or self._kind_pending("chunk", i):
                continue
            cid = m.chunks[i].id
            self._send(s, "chunk", i, partial(GetChunk, chunk_id=cid))

    def on_chunk(self, conn: Link, msg: ChunkData) -> None:
        r = self._take(conn, msg.req_id, "chunk")
        m = self.manifest
        if r is None or m is None:
            self.host.penalize(conn, 5.0, "unsolicited snapshot chunk")
            return
        s = self._source_of(conn)
        i = r.key
        if i in self.have:
            return
        try:
            check_chunk(m, i, msg.data)
        except BadSnapshot as e:
            self.stats.chunks_bad += 1
            self.stats.chunk_retries += 1
            if s is not None:
                s.bad += 1
                self.sources.pop(conn.peer_id or b"", None)
            self.todo.append(i)
            self.host.ban(conn, f"snapshot: bad chunk {i} ({e.detail})")
            self._fill_chunks()
            return
        self.snaps.put_chunk(m.chunks[i].id, msg.data)
        self.have.add(i)
        latency = self.clock() - r.sent
        self.stats.chunks_verified += 1
        self.stats.bytes_fetched += len(msg.data)
        self.stats.chunk_latency_s.append(latency)
        if s is not None:
            s.chunks += 1
            s.bytes += len(msg.data)
            s.busy_s += latency
        self._fill_chunks()

    def _chunks_done(self) -> None:
        self.phase = "block"
        self._ask_one("block")

    def on_blocks(self, conn: Link, msg: Blocks) -> None:
        r = self.pending.get(msg.req_id)
        if r is not None and r.kind == "backfill":
            self.backfill.on_blocks(conn, msg)
            return
        r = self._take(conn, msg.req_id, "block")
        m, hdr = self.manifest, self.target_header
        if r is None or m is None or hdr is None:
            self.host.penalize(conn, 5.0, "unsolicited blocks")
            return
        block = decode_single_block(msg.blocks)
        if block is None or block.header.compute_hash() != hdr.hash or block.hash != hdr.hash:
            self.host.ban(conn, "snapshot: served another block than the verified header")
            self._ask_one("block")
            return
        if merkle_root([t.txid() for t in block.txs]) != block.header.tx_root:
            self.host.ban(conn, "snapshot: block transactions do not match its header")
            self._ask_one("block")
            return
        ledger = self.snaps.load(m)
        self.snaps.save_manifest(m)  # before the base: a restart finds the state it needs
        self.host.chain.install_snapshot(block, ledger)
        self.stats.restored_at = self.clock()
        self.phase = "done"
        self.host.info(
            "snapshot_restored",
            f"state at {m.height} restored from {len(m.chunks)} chunks "
            f"({self.stats.bytes_fetched} bytes fetched, {self.stats.chunks_bad} bad chunks "
            f"refetched) in {self.clock() - self.stats.started:.2f} s; syncing the blocks after it",
            height=m.height,
            bytes=self.stats.bytes_fetched,
        )

    def view(self) -> dict[str, object]:
        return onboard_view(self)
