"""The reference P2P node daemon: chain, validation, storage, wire protocol, gossip, REST API.

This package is the target under test of netdiag's tools and imports nothing else of netdiag:
benchmarks and tracers reach it only through its wire protocol, REST API and process boundary.

Layers (arrows point down):
    daemon -> {api, transport, producer, sync} -> {gossip, protocol, chain} -> {store, validation}
    -> {types, crypto, merkle, schedule}
``protocol`` and ``gossip`` are pure state machines (bytes/messages in, events/sends out, no I/O);
``transport`` is the thin asyncio layer around them.
"""
