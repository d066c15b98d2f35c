"""Gossipsub-v1.1-shaped router core, without I/O: messages in, (peer, message) sends out.

Mesh degree D=6 (D_lo 4, D_hi 12, D_score 4, D_lazy 6), heartbeat maintenance, a seen cache
with TTL and a size cap, a windowed message cache for IHAVE/IWANT, capped IHAVE/IWANT, no
forwarding of duplicates or of messages validation rejected, and peer scores built from first
deliveries (+), invalid messages (-, squared), broken IWANT promises and GRAFT-during-backoff
(-, squared), and application penalties the node adds (protocol violations, rate-limit hits).
Scores decay every heartbeat. Values follow go-libp2p-pubsub's defaults where they exist.
"""

from __future__ import annotations

import hashlib
import random
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from netdiag.node.config import NodeConfig
from netdiag.node.messages import TOPICS, Graft, IHave, IWant, Message, Prune, Publish

Send = tuple[bytes, Message]


def message_id(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


@dataclass(frozen=True)
class GossipParams:
    d: int = 6
    d_lo: int = 4
    d_hi: int = 12
    d_score: int = 4
    d_lazy: int = 6
    heartbeat_s: float = 1.0
    seen_ttl_s: float = 120.0
    # go-libp2p's seen cache is bounded by time alone; at a flood's rate (a valid tx from the
    # API every ms) 120 s of records is ~40 MB of Python objects, so the count is capped too.
    # A message pushed out early and seen again is validated again: known txs and blocks are
    # ignored before any signature check (ingest), so the cost is a hash and a lookup. 8,192
    # records (~1.9 MB) keep the full TTL up to 68 messages/s (bench p2p's load: ~22/s).
    seen_max: int = 8_192
    mcache_len: int = 5  # heartbeats a message stays retrievable by IWANT
    mcache_gossip: int = 3  # heartbeats a message is advertised in IHAVE
    max_ihave_length: int = 5000  # ids per IHAVE considered
    max_ihave_messages: int = 10  # IHAVEs accepted per peer per heartbeat
    max_iwant_serves: int = 3  # times one message is sent to one peer in answer to IWANT
    iwant_followup_s: float = 3.0  # a peer that advertised an id must deliver it within this
    prune_backoff_s: int = 60
    # score thresholds
    gossip_threshold: float = -10.0  # below: no IHAVE/IWANT with this peer
    publish_threshold: float = -50.0  # below: we do not flood-publish to this peer
    graylist_threshold: float = -80.0  # below: everything from this peer is ignored
    # score weights
    first_delivery_weight: float = 1.0
    first_delivery_cap: float = 20.0
    invalid_weight: float = -10.0
    behaviour_weight: float = -5.0
    decay: float = 0.9
    decay_to_zero: float = 0.01


@dataclass
class PeerState:
    outbound: bool
    first_deliveries: float = 0.0
    invalid: float = 0.0
    behaviour: float = 0.0
    app: float = 0.0
    backoff_until: dict[str, float] = field(default_factory=dict)
    ihaves_this_heartbeat: int = 0
    promises: dict[bytes, float] = field(default_factory=dict)  # msg id -> deadline


@dataclass(slots=True)  # one per message in the seen cache: 235 B with slots, 340 B without
class MessageRecord:
    """Per-message delivery facts the node exposes: first seen, first peer, duplicates."""

    topic: str
    first_seen: float
    first_peer: bytes | None  # None: published locally
    duplicates: int = 0
    verdict: str = "pending"  # accept | reject | ignore | pending


def params_from(cfg: NodeConfig) -> GossipParams:
    """The router's parameters a node's config sets (the rest stay gossipsub's defaults)."""
    return GossipParams(
        d=cfg.gossip_d,
        d_lo=cfg.gossip_d_lo,
        d_hi=cfg.gossip_d_hi,
        d_score=min(4, cfg.gossip_d),
        heartbeat_s=cfg.gossip_heartbeat_s,
        seen_ttl_s=cfg.gossip_seen_ttl_s,
        seen_max=cfg.gossip_seen_max,
    )


class GossipRouter:
    def __init__(
        self, params: GossipParams, clock: Callable[[], float], rng: random.Random | None = None
    ) -> None:
        self.p = params
        self.clock = clock
        self.rng = rng or random.Random()
        self.peers: dict[bytes, PeerState] = {}
        self.mesh: dict[str, set[bytes]] = {t: set() for t in TOPICS}
        self.seen: OrderedDict[bytes, MessageRecord] = OrderedDict()
        self.seen_evicted = 0  # records pushed out by ``seen_max`` before their TTL
        self.mcache: list[list[bytes]] = [[]]
        self.mstore: dict[bytes, tuple[str, bytes]] = {}
        self.iwant_served: dict[tuple[bytes, bytes], int] = {}

    # -- peers and scores ------------------------------------------------------------------

    def add_peer(self, pid: bytes, outbound: bool) -> list[Send]:
        self.peers[pid] = PeerState(outbound)
        sends: list[Send] = []
        for topic, mesh in self.mesh.items():
            if len(mesh) < self.p.d:
                mesh.add(pid)
                sends.append((pid, Graft(topic)))
        return sends

    def remove_peer(self, pid: bytes) -> None:
        self.peers.pop(pid, None)
        for mesh in self.mesh.values():
            mesh.discard(pid)
        for key in [k for k in self.iwant_served if k[0] == pid]:
            del self.iwant_served[key]

    def score(self, pid: bytes) -> float:
        st = self.peers.get(pid)
        if st is None:
            return 0.0
        p = self.p
        return (
            p.first_delivery_weight * min(st.first_deliveries, p.first_delivery_cap)
            + p.invalid_weight * st.invalid**2
            + p.behaviour_weight * st.behaviour**2
            + st.app
        )

    def penalize(self, pid: bytes, amount: float) -> None:
        """Application-specific penalty (negative score contribution, decays like the rest)."""
        st = self.peers.get(pid)
        if st is not None:
            st.app -= amount

    def count_invalid(self, pid: bytes) -> None:
        """An invalid message from ``pid`` that never reached ``validated`` (a compact block
        whose ids do not match its header): scored as a rejected message."""
        st = self.peers.get(pid)
        if st is not None:
            st.invalid += 1

    def mesh_topics(self, pid: bytes) -> list[str]:
        return [t for t, m in self.mesh.items() if pid in m]

    # -- messages --------------------------------------------------------------------------

    def publish(self, topic: str, data: bytes) -> tuple[bytes, list[Send]]:
        """Our own message: flood to every peer above the publish threshold (v1.1 default)."""
        mid = message_id(data)
        if mid in self.seen:
            return mid, []
        self._remember(mid, MessageRecord(topic, self.clock(), None, verdict="accept"))
        self._cache(mid, topic, data)
        msg = Publish(topic, data)
        return mid, [
            (pid, msg) for pid in self.peers if self.score(pid) >= self.p.publish_threshold
        ]

    def receive(self, pid: bytes, topic: str, data: bytes) -> tuple[bytes, MessageRecord, bool]:
        """Record a Publish from ``pid``. Returns (id, record, first_time); only first-time
        messages go to validation — duplicates are counted and never forwarded."""
        mid = message_id(data)
        st = self.peers.get(pid)
        if st is not None:
            st.promises.pop(mid, None)
        rec = self.seen.get(mid)
        if rec is not None:
            rec.duplicates += 1
            return mid, rec, False
        rec = MessageRecord(topic, self.clock(), pid)
        self._remember(mid, rec)
        return mid, rec, True

    def _remember(self, mid: bytes, rec: MessageRecord) -> None:
        self.seen[mid] = rec
        while len(self.seen) > self.p.seen_max:
            self.seen.popitem(last=False)
            self.seen_evicted += 1

    def forget(self, mid: bytes) -> None:
        """Drop ``mid`` from the seen cache: a message refused unchecked (no room for it) is
        taken again when a later copy arrives, not dropped as a duplicate."""
        self.seen.pop(mid, None)

    def validated(self, mid: bytes, data: bytes, verdict: str) -> list[Send]:
        rec = self.seen.get(mid)
        if rec is None:
            return []
        rec.verdict = verdict
        src = rec.first_peer
        st = self.peers.get(src) if src is not None else None
        if verdict == "reject":
            if st is not None:
                st.invalid += 1
            return []
        if verdict != "accept":
            return []
        if st is not None:
            st.first_deliveries += 1
        self._cache(mid, rec.topic, data)
        msg = Publish(rec.topic, data)
        return [(pid, msg) for pid in self.mesh.get(rec.topic, ()) if pid != src]

    def _cache(self, mid: bytes, topic: str, data: bytes) -> None:
        if mid not in self.mstore:
            self.mstore[mid] = (topic, data)
            self.mcache[0].append(mid)

    # -- control messages ------------------------------------------------------------------

    def on_ihave(self, pid: bytes, topic: str, ids: list[bytes]) -> list[Send]:
        st = self.peers.get(pid)
        if st is None or topic not in self.mesh or self.score(pid) < self.p.gossip_threshold:
            return []
        st.ihaves_this_heartbeat += 1
        if st.ihaves_this_heartbeat > self.p.max_ihave_messages:
            return []
        want = [m for m in ids[: self.p.max_ihave_length] if m not in self.seen]
        want = [m for m in dict.fromkeys(want) if m not in st.promises]
        if not want:
            return []
        deadline = self.clock() + self.p.iwant_followup_s
        for m in want:
            st.promises[m] = deadline
        return [(pid, IWant(want))]

    def on_iwant(self, pid: bytes, ids: list[bytes]) -> list[Send]:
        if pid not in self.peers or self.score(pid) < self.p.gossip_threshold:
            return []
        sends: list[Send] = []
        for m in ids[: self.p.max_ihave_length]:
            item = self.mstore.get(m)
            if item is None:
                continue
            n = self.iwant_served.get((pid, m), 0)
            if n >= self.p.max_iwant_serves:
                continue
            self.iwant_served[(pid, m)] = n + 1
            sends.append((pid, Publish(item[0], item[1])))
        return sends

    def on_graft(self, pid: bytes, topic: str) -> list[Send]:
        st = self.peers.get(pid)
        if st is None:
            return []
        if topic not in self.mesh:
            st.behaviour += 1
            return []
        now = self.clock()
        if st.backoff_until.get(topic, 0.0) > now:
            st.behaviour += 1  # grafting while told to back off
            return [(pid, Prune(topic, self.p.prune_backoff_s))]
        if self.score(pid) < 0:
            return [(pid, Prune(topic, self.p.prune_backoff_s))]
        self.mesh[topic].add(pid)  # above D_hi is trimmed at the next heartbeat
        return []

    def on_prune(self, pid: bytes, topic: str, backoff_s: int) -> None:
        st = self.peers.get(pid)
        if st is None or topic not in self.mesh:
            return
        self.mesh[topic].discard(pid)
        st.backoff_until[topic] = self.clock() + min(max(backoff_s, 1), 3600)

    # -- heartbeat -------------------------------------------------------------------------

    def heartbeat(self) -> list[Send]:
        now = self.clock()
        p = self.p
        sends: list[Send] = []
        for st in self.peers.values():
            broken = [m for m, dl in st.promises.items() if dl < now]
            for m in broken:
                del st.promises[m]
                if m not in self.seen:
                    st.behaviour += 1  # advertised, was asked, never delivered
            st.first_deliveries = _decay(st.first_deliveries, p)
            st.invalid = _decay(st.invalid, p)
            st.behaviour = _decay(st.behaviour, p)
            st.app = _decay(st.app, p)
            st.ihaves_this_heartbeat = 0
        for topic, mesh in self.mesh.items():
            for pid in [x for x in mesh if self.score(x) < 0]:
                mesh.discard(pid)
                self._backoff(pid, topic, now)
                sends.append((pid, Prune(topic, p.prune_backoff_s)))
            if len(mesh) < p.d_lo:
                cands = [
                    x
                    for x, st in self.peers.items()
                    if x not in mesh
                    and self.score(x) >= 0
                    and st.backoff_until.get(topic, 0) <= now
                ]
                for pid in self.rng.sample(cands, min(len(cands), p.d - len(mesh))):
                    mesh.add(pid)
                    sends.append((pid, Graft(topic)))
            if len(mesh) > p.d_hi:
                ranked = sorted(mesh, key=self.score, reverse=True)
                keep = ranked[: p.d_score]
                rest = ranked[p.d_score :]
                self.rng.shuffle(rest)
                keep += rest[: p.d - len(keep)]
                for pid in set(mesh) - set(keep):
                    mesh.discard(pid)
                    self._backoff(pid, topic, now)
                    sends.append((pid, Prune(topic, p.prune_backoff_s)))
            ids = [
                m
                for win in self.mcache[: p.mcache_gossip]
                for m in win
                if self.mstore[m][0] == topic
            ]
            if ids:
                lazy = [
                    x for x in self.peers if x not in mesh and self.score(x) >= p.gossip_threshold
                ]
                for pid in self.rng.sample(lazy, min(len(lazy), p.d_lazy)):
                    sends.append((pid, IHave(topic, ids[-p.max_ihave_length :])))
        # shift the message cache window and expire the seen cache
        self.mcache.insert(0, [])
        while len(self.mcache) > p.mcache_len:
            for m in self.mcache.pop():
                self.mstore.pop(m, None)
                for key in [k for k in self.iwant_served if k[1] == m]:
                    del self.iwant_served[key]
        while self.seen:
            mid, rec = next(iter(self.seen.items()))
            if rec.first_seen + p.seen_ttl_s > now:
                break
            del self.seen[mid]
        return sends

    def _backoff(self, pid: bytes, topic: str, now: float) -> None:
        st = self.peers.get(pid)
        if st is not None:
            st.backoff_until[topic] = now + self.p.prune_backoff_s


def _decay(x: float, p: GossipParams) -> float:
    x *= p.decay
    return 0.0 if abs(x) < p.decay_to_zero else x
