"""Onboarding's first step: the signed header chain 1..H, checked as headers (signatures,
producer schedule, entropy) in height order. Pipelined: each answer's signatures go to the
sigpool's workers at once, in any order, while the loop keeps fetching and checking the rules
of the headers below; a header waits only for its own signature's batch."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import msgspec

from netdiag.node.crypto import preverified
from netdiag.node.errors import ValidationError
from netdiag.node.link import Link
from netdiag.node.messages import GetHeaderChain, HeaderChain
from netdiag.node.model import BLOCK_DOMAIN
from netdiag.node.onboard_state import HEADER_BATCH, SignedHeader
from netdiag.node.schedule import epoch_seed_height
from netdiag.node.sigpool import SigCheck
from netdiag.node.validation import ChainView, check_entropy, check_signed_header

if TYPE_CHECKING:
    from netdiag.node.onboard import Onboarding


def fill_headers(ob: Onboarding) -> None:
    assert ob.target is not None
    top = ob.target[0]
    covered = ob.headers_buf  # (not a copy: up to the whole chain, on every answer)
    starts = {r.key for r in ob.pending.values() if r.kind == "headers"}
    h = ob.parent.header.height + 1
    while h <= top and len(starts) < 4 * max(1, len(ob.sources)):
        if h in covered or h in starts:
            h += HEADER_BATCH
            continue
        s = ob._pick()
        if s is None:
            return
        count = min(HEADER_BATCH, top - h + 1)
        ob._send(s, "headers", h, partial(GetHeaderChain, start=h, count=count))
        starts.add(h)
        h += HEADER_BATCH


def on_header_chain(ob: Onboarding, conn: Link, msg: HeaderChain) -> None:
    r = ob._take(conn, msg.req_id, "headers")
    if r is None:
        ob.host.penalize(conn, 5.0, "unsolicited header chain")
        return
    try:
        got = [msgspec.msgpack.decode(i, type=SignedHeader) for i in msg.items]
    except (msgspec.DecodeError, msgspec.ValidationError):
        ob.host.ban(conn, "snapshot: undecodable header chain")
        return
    if not got or any(g.header.height != r.key + i for i, g in enumerate(got)):
        ob.host.penalize(conn, 20.0, f"header chain from {r.key} empty or out of order")
        fill_headers(ob)
        return
    new: list[SigCheck] = []
    buf = ob.headers_buf
    for g in got:
        if g.header.height not in buf:
            sig = header_sig(g)
            buf[g.header.height] = (g, conn, sig)
            new.append(sig)
    ob.stats.bytes_fetched += sum(len(i) for i in msg.items)
    # Pipelined: the batch's signatures go to the sigpool's workers at once, in any
    # order, while the loop goes on fetching and checking the rules of earlier headers.
    if new and ob.sigs is not None and ob.sigs.prove_later(new, partial(proven, ob, new)):
        ob.sig_wait.update(new)
    verify_run(ob)


def proven(ob: Onboarding, sent: list[SigCheck], ok: list[SigCheck]) -> None:
    """On the loop: the workers checked ``sent``; ``ok`` verified (the rest will be
    verified again inline, by the same rule, and fail there)."""
    ob.sig_wait.difference_update(sent)
    if ob.phase != "headers":
        return
    ob.sig_ok.update(ok)
    try:
        verify_run(ob)
    except Exception as e:  # a loop callback: say so, never kill the loop
        ob.host.note("snapshot_internal_error", f"header check failed: {e!r}")


def verify_run(ob: Onboarding) -> None:
    """Every rule, in height order, over the contiguous run above the verified parent,
    up to the first header whose signature is still at the sigpool. Each header's
    signature is checked: by the pool (preverified) or here."""
    if ob.phase != "headers":
        return  # a late answer after the chain was verified (or onboarding restarted)
    with preverified(ob.sig_ok):
        _check_run(ob)


def _check_run(ob: Onboarding) -> None:
    assert ob.target is not None
    chain = ob.host.chain
    L = chain.params.epoch_length
    now = ob.wall_ms()
    seeds, validators, network_id = ob.seeds, chain.genesis.validators, chain.genesis.network_id

    def seed_hash(h: int) -> bytes:
        return seeds[epoch_seed_height(h, L)]

    while (got := ob.headers_buf.get(ob.parent.header.height + 1)) is not None:
        nxt, conn, sig = got
        if sig in ob.sig_wait:
            break  # its batch is at the workers: resumed by proven
        del ob.headers_buf[nxt.header.height]
        ob.sig_ok.discard(sig)
        p = ob.parent
        view = ChainView(
            network_id=network_id,
            tip_height=p.header.height,
            tip_hash=p.hash,
            tip_timestamp_ms=p.header.timestamp_ms,
            validators=validators,
            seed_hash=seed_hash,
            has_block=p.hash.__eq__,
            has_tx=_no_tx,
            tip_seed=p.header.mix or p.hash,
            entropy=chain.reveals,
        )
        try:
            check_signed_header(nxt.header, nxt.hash, nxt.signature, view, chain.params, now)
            check_entropy(nxt.header, view)
        except ValidationError as e:
            ob.headers_buf.clear()
            ob.host.ban(conn, f"snapshot: header {nxt.header.height} invalid ({e.detail})")
            fill_headers(ob)
            return
        if nxt.header.height % L == 0:
            ob.seeds[nxt.header.height] = nxt.header.mix or nxt.hash
        ob.parent = nxt
        ob.stats.headers_verified += 1
    top, top_hash, _ = ob.target
    if ob.parent.header.height < top:
        fill_headers(ob)
        return
    if ob.parent.hash != top_hash:
        ob._restart(f"the verified header at {top} is not the announced block")
        return
    ob.target_header = ob.parent
    ob.phase = "manifest"
    ob.host.info(
        "snapshot_headers",
        f"header chain 1..{top} verified (signatures, producer schedule, entropy)",
        height=top,
    )
    ob._ask_one("manifest")


def _no_tx(_txid: bytes) -> bool:
    return False


def header_sig(g: SignedHeader) -> SigCheck:
    return (g.header.producer, g.signature, BLOCK_DOMAIN + g.hash)
