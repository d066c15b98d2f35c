"""Kademlia routing table and iterative lookup, without I/O.

Node ids in the Kademlia space are SHA-256 of the node's Ed25519 public key (uniform even if keys
are not, and a key cannot be ground to a chosen kad id cheaper than a hash preimage). Distance is
XOR; the bucket of a peer is ``log2(distance)`` (0 = the nearest half-bit, 255 = the far half).
A bucket holds at most ``k`` entries, least-recently-seen first. A new contact for a full bucket
does not evict anyone: the caller checks the least-recently-seen entry's liveness first and
evicts it only if it failed (Kademlia's rule: old live nodes are the most likely to stay).

Sybil/eclipse limits (after Bitcoin Core's netgroups and go-libp2p-kbucket's diversity filter):
at most ``per_subnet_bucket`` entries of one /24 (IPv4) or /48 (IPv6) per bucket and
``per_subnet_table`` in the whole table, so one operator's address block cannot fill a bucket.

``Lookup`` is the α-parallel iterative FIND_NODE of the paper as a state machine: the caller asks
``next_queries``, reports replies and failures, and stops when ``done``.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

K = 20
ALPHA = 3
ID_BITS = 256
MAX_LOOKUP_QUERIES = 3 * K  # an adversary cannot keep a lookup running with ever-closer fakes


def kad_id(node_id: bytes) -> bytes:
    return hashlib.sha256(node_id).digest()


def distance(a: bytes, b: bytes) -> int:
    return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")


def bucket_index(own_kid: bytes, kid: bytes) -> int:
    """0..255; -1 for our own id."""
    return distance(own_kid, kid).bit_length() - 1


def random_id_in_bucket(own_kid: bytes, bucket: int, rand: bytes) -> bytes:
    """A kad id whose distance to ``own_kid`` has its top bit at ``bucket`` (for refreshes)."""
    r = int.from_bytes(rand, "big") & ((1 << bucket) - 1)
    d = (1 << bucket) | r
    return (int.from_bytes(own_kid, "big") ^ d).to_bytes(32, "big")


def subnet(host: str) -> str:
    """The address block one operator is assumed to control: /24 for IPv4, /48 for IPv6."""
    ip = ipaddress.ip_address(host)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def valid_host(host: str) -> bool:
    """Table entries carry IP literals only (subnet rules need the address, not a name)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return not (ip.is_multicast or ip.is_unspecified)


@dataclass(frozen=True)
class Contact:
    node_id: bytes  # Ed25519 public key, proven by a handshake before the contact is tabled
    host: str
    port: int
    kid: bytes = field(default=b"", compare=False, repr=False)
    subnet: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.kid:
            object.__setattr__(self, "kid", kad_id(self.node_id))
        if not self.subnet:
            object.__setattr__(self, "subnet", subnet(self.host))

    @property
    def addr(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass
class Entry:
    contact: Contact
    added: float
    last_seen: float
    failures: int = 0  # consecutive failed liveness checks or dials


@dataclass(frozen=True)
class Limits:
    k: int = K
    per_subnet_bucket: int = 2
    per_subnet_table: int = 10
    replacements: int = K  # candidates kept per full bucket, tried when an entry dies


class RoutingTable:
    def __init__(self, own_node_id: bytes, limits: Limits, clock: Callable[[], float]) -> None:
        self.own_node_id = own_node_id
        self.own_kid = kad_id(own_node_id)
        self.limits = limits
        self.clock = clock
        self.buckets: list[list[Entry]] = [[] for _ in range(ID_BITS)]
        self.replacements: list[list[Contact]] = [[] for _ in range(ID_BITS)]
        self._by_id: dict[bytes, Entry] = {}
        self._nets: Counter[str] = Counter()  # entries per subnet in the whole table

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._by_id

    def get(self, node_id: bytes) -> Entry | None:
        return self._by_id.get(node_id)

    def bucket_of(self, node_id: bytes) -> int:
        return bucket_index(self.own_kid, kad_id(node_id))

    def entries(self) -> list[Entry]:
        return [e for b in self.buckets for e in b]

    def subnet_count(self, net: str, bucket: list[Entry] | None = None) -> int:
        if bucket is None:
            return self._nets[net]
        return sum(e.contact.subnet == net for e in bucket)

    def _put(self, idx: int, entry: Entry) -> None:
        self.buckets[idx].append(entry)
        self._by_id[entry.contact.node_id] = entry
        self._nets[entry.contact.subnet] += 1

    def _pop(self, idx: int, entry: Entry) -> None:
        self.buckets[idx].remove(entry)
        del self._by_id[entry.contact.node_id]
        self._nets[entry.contact.subnet] -= 1

    def closest(
        self, target_kid: bytes, n: int, keep: Callable[[Contact], bool] | None = None
    ) -> list[Contact]:
        pool = [e.contact for e in self._by_id.values() if keep is None or keep(e.contact)]
        pool.sort(key=lambda c: distance(c.kid, target_kid))
        return pool[:n]

    # -- updates ---------------------------------------------------------------------------

    def offer(self, contact: Contact) -> tuple[str, Contact | None]:
        """A contact proven alive at its address. Returns (outcome, contact to check):
        ``updated`` (known: moved to the tail), ``added``, ``full`` (the least-recently-seen
        entry must pass a liveness check before anything is evicted; the contact waits as a
        replacement), ``subnet_bucket``/``subnet_table`` (refused by the diversity limits) or
        ``self``."""
        if contact.node_id == self.own_node_id:
            return "self", None
        now = self.clock()
        idx = bucket_index(self.own_kid, contact.kid)
        bucket = self.buckets[idx]
        old = self._by_id.get(contact.node_id)
        if old is not None:
            self._pop(idx, old)
            if old.contact.subnet != contact.subnet:
                refusal = self._limit(contact, bucket)  # a moved peer must pass them again
                if refusal:
                    return refusal, None
            old.contact = contact
            old.last_seen, old.failures = now, 0
            self._put(idx, old)
            return "updated", None
        refusal = self._limit(contact, bucket)
        if refusal:
            return refusal, None
        if len(bucket) < self.limits.k:
            self._put(idx, Entry(contact, now, now))
            self._drop_replacement(idx, contact.node_id)
            return "added", None
        reps = self.replacements[idx]
        self._drop_replacement(idx, contact.node_id)
        reps.append(contact)
        del reps[: max(0, len(reps) - self.limits.replacements)]
        return "full", bucket[0].contact

    def _limit(self, contact: Contact, bucket: list[Entry]) -> str | None:
        net = contact.subnet
        if self.subnet_count(net, bucket) >= self.limits.per_subnet_bucket:
            return "subnet_bucket"
        if self.subnet_count(net) >= self.limits.per_subnet_table:
            return "subnet_table"
        return None

    def _drop_replacement(self, idx: int, node_id: bytes) -> None:
        reps = self.replacements[idx]
        reps[:] = [c for c in reps if c.node_id != node_id]

    def seen(self, node_id: bytes) -> bool:
        """The entry answered (or spoke to us): least-recently-seen order moves it last."""
        e = self._by_id.get(node_id)
        if e is None:
            return False
        bucket = self.buckets[bucket_index(self.own_kid, e.contact.kid)]
        bucket.remove(e)
        bucket.append(e)
        e.last_seen, e.failures = self.clock(), 0
        return True

    def failed(self, node_id: bytes, max_failures: int = 1) -> Contact | None:
        """A liveness check or dial failed. After ``max_failures`` in a row the entry is evicted
        and the newest replacement that passes the limits takes its place (returned)."""
        e = self._by_id.get(node_id)
        if e is None:
            return None
        e.failures += 1
        if e.failures < max_failures:
            return None
        return self.remove(node_id)

    def remove(self, node_id: bytes) -> Contact | None:
        """Drop an entry (dead, banned, or moved); returns the replacement promoted, if any."""
        e = self._by_id.get(node_id)
        if e is None:
            return None
        idx = bucket_index(self.own_kid, e.contact.kid)
        self._pop(idx, e)
        reps = self.replacements[idx]
        while reps:
            cand = reps.pop()
            if cand.node_id in self._by_id or self._limit(cand, self.buckets[idx]):
                continue
            now = self.clock()
            self._put(idx, Entry(cand, now, now))
            return cand
        return None

    def restore(self, contact: Contact, last_seen: float) -> bool:
        """Load a persisted entry (limits still apply)."""
        if contact.node_id == self.own_node_id or contact.node_id in self._by_id:
            return False
        bucket = self.buckets[bucket_index(self.own_kid, contact.kid)]
        if len(bucket) >= self.limits.k or self._limit(contact, bucket):
            return False
        self._put(bucket_index(self.own_kid, contact.kid), Entry(contact, last_seen, last_seen))
        bucket.sort(key=lambda x: x.last_seen)
        return True

    def nonempty_range(self) -> range:
        """Buckets from the nearest non-empty one to the farthest (those worth refreshing)."""
        used = [i for i, b in enumerate(self.buckets) if b]
        return range(min(used), ID_BITS) if used else range(0)


# -- iterative lookup ----------------------------------------------------------------------


@dataclass
class _Cand:
    contact: Contact
    hop: int  # queries in sequence needed to learn of it (a seed is hop 1)
    state: str = "new"  # new | inflight | ok | failed


class Lookup:
    """Iterative FIND_NODE for ``target`` (a kad id): α queries in flight, always to the nearest
    not-yet-queried candidates among the k nearest not known to have failed; done when those k
    have all answered or failed."""

    def __init__(
        self,
        target: bytes,
        seeds: Iterable[Contact],
        own_node_id: bytes,
        k: int = K,
        alpha: int = ALPHA,
        max_queries: int = MAX_LOOKUP_QUERIES,
    ) -> None:
        self.target = target
        self.own_node_id = own_node_id
        self.k = k
        self.alpha = alpha
        self.max_queries = max_queries
        self.cands: dict[bytes, _Cand] = {}
        self.queries = 0
        self.replies = 0
        for c in seeds:
            self._add(c, 1)

    def _add(self, c: Contact, hop: int) -> None:
        if c.node_id == self.own_node_id or c.node_id in self.cands:
            return
        self.cands[c.node_id] = _Cand(c, hop)

    def _nearest_live(self) -> list[_Cand]:
        live = [c for c in self.cands.values() if c.state != "failed"]
        live.sort(key=lambda c: distance(c.contact.kid, self.target))
        return live[: self.k]

    @property
    def inflight(self) -> int:
        return sum(c.state == "inflight" for c in self.cands.values())

    def next_queries(self) -> list[Contact]:
        out: list[Contact] = []
        budget = min(self.alpha - self.inflight, self.max_queries - self.queries)
        for c in self._nearest_live():
            if len(out) >= budget:
                break
            if c.state == "new":
                c.state = "inflight"
                out.append(c.contact)
        self.queries += len(out)
        return out

    def on_reply(self, node_id: bytes, found: Iterable[Contact]) -> None:
        c = self.cands.get(node_id)
        if c is None or c.state != "inflight":
            return
        c.state = "ok"
        self.replies += 1
        for f in found:
            self._add(f, c.hop + 1)

    def on_failure(self, node_id: bytes) -> None:
        c = self.cands.get(node_id)
        if c is not None and c.state == "inflight":
            c.state = "failed"

    @property
    def done(self) -> bool:
        if self.inflight:
            return False
        if self.queries >= self.max_queries:
            return True
        return all(c.state != "new" for c in self._nearest_live())

    def result(self) -> list[Contact]:
        """The k nearest candidates that answered, nearest first."""
        ok = [c for c in self.cands.values() if c.state == "ok"]
        ok.sort(key=lambda c: distance(c.contact.kid, self.target))
        return [c.contact for c in ok[: self.k]]

    @property
    def hops(self) -> int:
        """Sequential query steps that reached the nearest node that answered (0: none)."""
        ok = [c for c in self.cands.values() if c.state == "ok"]
        if not ok:
            return 0
        return min(ok, key=lambda c: distance(c.contact.kid, self.target)).hop
