"""A forged header in the snapshot join's header chain, checked through the pipelined path
(onboard_headers: each answer's signatures at the sigpool's workers while the loop goes on):
refused at its height, its source banned, nothing above it taken, and the join completes from
honest sources. The real SigPool, its answers arriving on a running asyncio loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from netdiag.node.core import NodeCore
from netdiag.node.model import BLOCK_DOMAIN
from netdiag.node.onboard_state import SignedHeader
from netdiag.node.sigpool import SigPool
from tests.unit.node import corekit
from tests.unit.node.corekit import World
from tests.unit.node.test_onboard import JOIN, network

FORGED_AT = 5
_enc = msgspec.msgpack.Encoder()


def forge(kind: str) -> Callable[[SignedHeader], SignedHeader]:
    """bad_signature: one bit of the producer's signature flipped. wrong_producer: the header
    re-signed, validly, by a genesis validator that is not the one scheduled for its slot."""
    _, keys = corekit.lab()

    def one(g: SignedHeader) -> SignedHeader:
        if kind == "bad_signature":
            return SignedHeader(g.header, g.hash, bytes([g.signature[0] ^ 1]) + g.signature[1:])
        other = next(k for k in keys if k.node_id != g.header.producer)
        hdr = msgspec.structs.replace(g.header, producer=other.node_id)
        h = hdr.compute_hash()
        return SignedHeader(hdr, h, other.sign(BLOCK_DOMAIN + h))

    return one


def serve_forged(core: NodeCore, forged: Callable[[SignedHeader], SignedHeader]) -> None:
    honest = core.snapshot_service.header_chain

    def header_chain(start: int, count: int) -> list[bytes]:
        out = []
        for raw in honest(start, count):
            g = msgspec.msgpack.decode(raw, type=SignedHeader)
            out.append(_enc.encode(forged(g)) if g.header.height == FORGED_AT else raw)
        return out

    core.snapshot_service.header_chain = header_chain  # type: ignore[method-assign]


async def run_until(world: World, cond: Callable[[], bool], budget_s: float) -> None:
    """Manual time in small steps, yielding to the loop between them so the sigpool's
    answers (done callbacks on this loop) arrive while the joiner goes on."""
    t = 0.0
    while not cond() and t < budget_s:
        world.run(0.01)
        t += 0.01
        await asyncio.sleep(0.002)
    assert cond(), f"not reached within {budget_s} s of simulated time"


@pytest.mark.parametrize("kind", ["bad_signature", "wrong_producer"])
def test_a_forged_header_is_refused_and_its_source_banned(
    tmp_path: Path, pool: SigPool, kind: str
) -> None:
    world, cores = network(tmp_path)
    bad, honest = cores[2], cores[:2]
    serve_forged(bad, forge(kind))
    j = world.node("joiner", **JOIN)
    j.onboarding.sigs = pool
    ob = j.onboarding
    checked = pool.checks

    async def scenario() -> None:
        world.connect(j, bad)  # the forger is the only source at first
        await run_until(world, lambda: j.book.peer_banned(bad.node_id), 20)
        # refused at its height: everything below it verified, nothing from it or above
        assert ob.parent.header.height == FORGED_AT - 1
        assert ob.stats.headers_verified == FORGED_AT - 1
        assert pool.checks > checked, "the chain's signatures went to the sigpool's workers"
        assert ob.phase in ("headers", "waiting")
        for c in honest:
            world.connect(j, c)
        await run_until(world, lambda: ob.phase == "done", 30)

    asyncio.run(scenario())
    bans = [e for e in world.events("joiner", "peer_banned") if f"header {FORGED_AT}" in str(e)]
    assert bans, world.logs["joiner"].getvalue()[-2000:]
    reason = "signature" if kind == "bad_signature" else "scheduled producer"
    assert reason in str(bans[0])
    assert ob.target_header is not None and ob.stats.headers_verified >= FORGED_AT
    h = ob.target_header.header.height
    assert j.chain.store.block_at(h) == honest[0].chain.store.block_at(h)
