"""Wire messages: a msgspec tagged union, decoded with strict types (no coercion, no extras).

Block and transaction payloads travel as nested msgpack bytes so gossip message ids are stable
(SHA-256 of exactly the bytes that were published) and validation decodes them separately.

The sync messages (Status, GetHeaders/Headers, GetBlocks/Blocks by range) are part of the
protocol from version 1 so a parallel sync engine can be built on them without a new version.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

# Protocol versions. Each side announces the highest it speaks in Hello; a connection speaks the
# lower of the two (``PeerProtocol.version``), and a peer below MIN_PROTOCOL_VERSION is refused.
#   1  the base protocol
#   2  FindNode.listen_port (the asker's listen port, so the node asked can table it); never
#      sent on a version-1 connection (a version-1 node decodes strictly and refuses the field)
#   3  compact block relay: CompactBlock, GetBlockTxn, BlockTxn (compact.py); sent only on
#      version-3 connections (an older node refuses the unknown tags)
PROTOCOL_VERSION = 3
MIN_PROTOCOL_VERSION = 1
VERSION_FINDNODE_LISTEN_PORT = 2
VERSION_COMPACT_BLOCKS = 3
TOPIC_BLOCKS = "blocks"
TOPIC_TXS = "txs"
TOPIC_PRESENCE = "presence"  # validator beacons (presence.py)
TOPIC_SNAPSHOTS = "snapshots"  # signed snapshot availability (snapshot_gossip.py)
TOPICS = (TOPIC_BLOCKS, TOPIC_TXS, TOPIC_PRESENCE, TOPIC_SNAPSHOTS)


class _Msg(msgspec.Struct, tag_field="t", forbid_unknown_fields=True):
    pass


# -- handshake -------------------------------------------------------------------------------


class Hello(_Msg, tag="hello"):
    network_id: str
    genesis_hash: bytes
    version: int
    node_id: bytes  # Ed25519 public key
    nonce: bytes  # 32 fresh random bytes; the peer must sign them
    listen_port: int  # 0 = not accepting connections (for peer exchange)
    agent: str = ""


class Auth(_Msg, tag="auth"):
    signature: bytes  # Ed25519 over handshake_transcript(...) — proves the key in Hello


class Disconnect(_Msg, tag="bye"):
    reason: str


# -- liveness and peer exchange ------------------------------------------------------------


class Ping(_Msg, tag="ping"):
    nonce: int


class Pong(_Msg, tag="pong"):
    nonce: int


class GetPeers(_Msg, tag="getpeers"):
    pass


class Peers(_Msg, tag="peers"):
    addrs: list[str]  # "host:port" of peers that accept connections


# -- discovery (Kademlia, kademlia.py / discovery.py) ---------------------------------------

KadId = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]


class NodeRecord(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    node_id: KadId  # Ed25519 public key; its kad id is SHA-256 of it
    host: Annotated[str, msgspec.Meta(max_length=45)]  # an IP literal (IPv6 at most 45 chars)
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)]


class FindNode(_Msg, tag="findnode", omit_defaults=True):
    req_id: Annotated[int, msgspec.Meta(ge=0)]
    target: KadId  # a kad id: the k nodes nearest to it are asked for
    # version 2: where the asker accepts connections (0: nowhere, and then not encoded at all, so
    # a FindNode without it is byte for byte the version-1 message): a probe's handshake
    # announces no listen port, so this is how the node asked learns of the asker (it dials
    # back to verify the key). A version-1 FindNode decodes with 0.
    listen_port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 0


class Nodes(_Msg, tag="nodes"):
    req_id: Annotated[int, msgspec.Meta(ge=0)]
    nodes: Annotated[list[NodeRecord], msgspec.Meta(max_length=20)]  # at most k, < 2 KiB


class KadPing(_Msg, tag="kadping"):
    req_id: Annotated[int, msgspec.Meta(ge=0)]


class KadPong(_Msg, tag="kadpong"):
    req_id: Annotated[int, msgspec.Meta(ge=0)]


# -- sync ----------------------------------------------------------------------------------


class Status(_Msg, tag="status"):
    height: int
    tip_hash: bytes
    genesis_hash: bytes


class GetHeaders(_Msg, tag="getheaders"):
    req_id: int
    start: int
    count: int


class Headers(_Msg, tag="headers"):
    req_id: int
    headers: list[bytes]  # canonical header encodings, ascending heights


class GetHeaderChain(_Msg, tag="getheaderchain"):
    req_id: int
    start: int
    count: int


class HeaderChain(_Msg, tag="headerchain"):
    req_id: int
    items: list[bytes]  # msgpack [header, hash, signature] per height, ascending


class GetSnapshot(_Msg, tag="getsnapshot"):
    req_id: int
    height: int


class SnapshotManifest(_Msg, tag="snapshot"):
    req_id: int
    manifest: bytes  # snapshot.Manifest encoding; empty: not held


class GetChunk(_Msg, tag="getchunk"):
    req_id: int
    chunk_id: bytes


class ChunkData(_Msg, tag="chunk"):
    req_id: int
    data: bytes  # empty: not held


class GetBlocks(_Msg, tag="getblocks"):
    req_id: int
    start: int
    count: int


class GetBlocksByHash(_Msg, tag="getblocksbyhash"):
    req_id: int
    hashes: list[bytes]


class Blocks(_Msg, tag="blocks"):
    req_id: int
    blocks: list[bytes]  # encoded blocks, ascending heights; may stop early at a byte budget


# -- compact block relay (version 3, compact.py) -----------------------------------------

MAX_COMPACT_TXS = 10_000  # ids in one compact block (the chain's max_block_txs is the real cap)
TxId = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]


class CompactBlock(_Msg, tag="cmpctblock"):
    """A block as its header, hash, producer signature and the full ids of its transactions
    (SHA-256 of each encoded tx, in block order): the receiver rebuilds it from its mempool."""

    header: bytes  # canonical header encoding
    hash: bytes
    signature: bytes
    txids: Annotated[list[TxId], msgspec.Meta(max_length=MAX_COMPACT_TXS)]


class GetBlockTxn(_Msg, tag="getblocktxn"):
    req_id: Annotated[int, msgspec.Meta(ge=0)]
    block_hash: bytes
    indexes: Annotated[list[int], msgspec.Meta(max_length=MAX_COMPACT_TXS)]  # ascending


class BlockTxn(_Msg, tag="blocktxn"):
    req_id: Annotated[int, msgspec.Meta(ge=0)]
    txs: list[bytes]  # encoded txs at the asked indexes, in order; empty: block not held


# -- entropy consensus check (at epoch boundaries) ----------------------------------------


class EntropyRequest(_Msg, tag="entropyreq"):
    req_id: int
    seed_height: int  # the boundary block whose hash seeds the next epoch's producer draw
    entropy: bytes  # the sender's entropy hash for that epoch


class EntropyResponse(_Msg, tag="entropyresp"):
    req_id: int
    seed_height: int
    entropy: bytes  # the responder's; empty if it has not reached seed_height yet


# -- gossip (gossipsub v1.1 shaped) --------------------------------------------------------


class Publish(_Msg, tag="pub"):
    topic: str
    data: bytes  # encoded Block or Tx; message id = SHA-256(data)


class IHave(_Msg, tag="ihave"):
    topic: str
    ids: list[bytes]


class IWant(_Msg, tag="iwant"):
    ids: list[bytes]


class Graft(_Msg, tag="graft"):
    topic: str


class Prune(_Msg, tag="prune"):
    topic: str
    backoff_s: int
    peers: list[str] = []  # peer exchange on prune (v1.1)


Message = (
    Hello
    | Auth
    | Disconnect
    | Ping
    | Pong
    | GetPeers
    | Peers
    | FindNode
    | Nodes
    | KadPing
    | KadPong
    | Status
    | GetHeaders
    | Headers
    | GetHeaderChain
    | HeaderChain
    | GetSnapshot
    | SnapshotManifest
    | GetChunk
    | ChunkData
    | GetBlocks
    | GetBlocksByHash
    | Blocks
    | CompactBlock
    | GetBlockTxn
    | BlockTxn
    | EntropyRequest
    | EntropyResponse
    | Publish
    | IHave
    | IWant
    | Graft
    | Prune
)
