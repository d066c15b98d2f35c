"""Dispatch: one authenticated peer message in, routed to gossip, sync, entropy or a served
answer. A bug while handling one message costs that connection, never the node."""

from __future__ import annotations

import traceback

from netdiag.node.chain import Chain
from netdiag.node.config import NodeConfig
from netdiag.node.debug import forge
from netdiag.node.entropy_check import EntropyCheck
from netdiag.node.gossip import GossipRouter
from netdiag.node.ingest import Ingest
from netdiag.node.link import Link
from netdiag.node.logs import NodeLog
from netdiag.node.messages import (
    Blocks,
    BlockTxn,
    CompactBlock,
    EntropyRequest,
    EntropyResponse,
    GetBlocks,
    GetBlocksByHash,
    GetBlockTxn,
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
from netdiag.node.model import decode_block, header_bytes
from netdiag.node.peering import Peering
from netdiag.node.policy import PENALTY_INVALID, PENALTY_VIOLATION, BanPolicy
from netdiag.node.snapshot_serve import SNAPSHOT_MESSAGES, SnapshotService
from netdiag.node.window_sync import ParallelSync

MAX_SERVE_BLOCKS = 128
MAX_SERVE_HEADERS = 256


class Dispatcher:
    def __init__(
        self,
        cfg: NodeConfig,
        log: NodeLog,
        metrics: NodeMetrics,
        chain: Chain,
        gossip: GossipRouter,
        peering: Peering,
        policy: BanPolicy,
        ingest: Ingest,
        sync: ParallelSync,
        entropy: EntropyCheck,
    ) -> None:
        self.cfg = cfg
        self.log = log
        self.metrics = metrics
        self.chain = chain
        self.gossip = gossip
        self.peering = peering
        self.policy = policy
        self.ingest = ingest
        self.sync = sync
        self.entropy = entropy
        self.snapshots: SnapshotService | None = None  # set by the core

    def on_message(self, conn: Link, msg: Message, size: int) -> None:
        try:
            self.dispatch(conn, msg, size)
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

    def dispatch(self, conn: Link, msg: Message, size: int) -> None:
        self.metrics.messages_received.labels(type(msg).__name__).inc()
        self.metrics.bytes_received.inc(size)
        pid = conn.peer_id
        assert pid is not None
        send_all = self.peering.send_all
        if self.gossip.score(pid) < self.gossip.p.graylist_threshold and isinstance(
            msg, Publish | IHave | IWant | Graft | CompactBlock
        ):
            return  # graylisted: ignored until its score decays back
        snaps = self.snapshots
        if snaps is not None and isinstance(msg, SNAPSHOT_MESSAGES):
            snaps.on_message(conn, msg)
            return
        onboarding = snaps is not None and snaps.onboarding.active
        compact = self.ingest.compact
        match msg:
            case Publish(topic=topic, data=data):
                self.ingest.on_publish(conn, topic, data)
            case CompactBlock():
                compact.on_compact(conn, msg)
            case GetBlockTxn():
                compact.serve_txn(conn, msg)
            case BlockTxn():
                compact.on_blocktxn(conn, msg)
            case IHave(topic=topic, ids=ids):
                send_all(self.gossip.on_ihave(pid, topic, ids))
            case IWant(ids=ids):
                send_all(self.gossip.on_iwant(pid, ids))
            case Graft(topic=topic):
                send_all(self.gossip.on_graft(pid, topic))
            case Prune(topic=topic, backoff_s=backoff, peers=px):
                self.gossip.on_prune(pid, topic, backoff)
                self.peering.book.learn(px)
            case Status():
                if msg.genesis_hash != self.chain.genesis_hash:
                    self.policy.penalize(conn, PENALTY_VIOLATION, "status for another genesis")
                elif not onboarding:  # a snapshot first: the sync engines wait for its state
                    self.sync.on_status(conn, msg)
            case GetBlocks(req_id=req, start=start, count=count):
                conn.send(Blocks(req, self.serve_range(start, count)))
            case GetBlocksByHash(req_id=req, hashes=hashes):
                conn.send(Blocks(req, self.serve_hashes(hashes)))
            case GetHeaders(req_id=req, start=start, count=count):
                conn.send(Headers(req, self.serve_headers(start, count)))
            case Blocks() if snaps is not None and snaps.onboarding.owns(msg.req_id):
                snaps.onboarding.on_blocks(conn, msg)
            case Blocks() if compact.owns(msg.req_id):
                compact.on_blocks(conn, msg)
            case Blocks() if self.entropy.owns(msg.req_id):
                self.entropy.on_blocks(conn, msg)
            case Blocks():
                self.sync.on_blocks(conn, msg)
            case EntropyRequest():
                self.entropy.answer(conn, msg)
            case EntropyResponse():
                if not self.entropy.on_response(conn, msg):
                    self.policy.penalize(conn, 5.0, "unsolicited entropy response")
            case Headers():
                self.sync.on_headers(conn, msg)
            case GetPeers():
                conn.send(Peers(self.peering.shareable_addrs(exclude=conn)))
            case Peers(addrs=addrs):
                self.peering.book.learn(addrs)
            case Ping(nonce=n):
                conn.send(Pong(n))
            case Pong():
                pass
            case _:
                self.policy.penalize(conn, PENALTY_INVALID, f"unexpected {type(msg).__name__}")

    def serve_headers(self, start: int, count: int) -> list[bytes]:
        """Headers are small whatever the block size, so no byte budget — only a count cap."""
        chain = self.chain
        if not 0 <= start <= chain.height or count <= 0 or 0 < start < chain.store.base_height():
            return []  # below a snapshot base: not stored (yet)
        end = min(start + min(count, MAX_SERVE_HEADERS), chain.height + 1)
        return [header_bytes(raw) for raw in chain.store.iter_range(start, end - start)]

    def serve_hashes(self, hashes: list[bytes]) -> list[bytes]:
        """Blocks by hash, each at most once and within the same byte budget as a range
        answer (the first one always: one block fits a frame); a block relayed compact may
        not be committed yet: served from that cache."""
        store, compact = self.chain.store, self.ingest.compact
        out: list[bytes] = []
        budget = self.cfg.max_frame_bytes // 2
        for h in dict.fromkeys(hashes[:MAX_SERVE_BLOCKS]):
            b = store.block_by_hash(h) or compact.cached(h)
            if b is None:
                continue
            raw = b.encode()
            budget -= len(raw) + 8
            if budget < 0 and out:
                break
            out.append(raw)
        return out

    def serve_range(self, start: int, count: int) -> list[bytes]:
        chain = self.chain
        if not 0 <= start <= chain.height or count <= 0 or 0 < start < chain.store.base_height():
            return []  # below a snapshot base: not stored (yet)
        out: list[bytes] = []
        budget = self.cfg.max_frame_bytes // 2
        for raw in chain.store.raw_range(start, min(count, MAX_SERVE_BLOCKS)):
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
