"""Claims are not facts: a peer that claims a tip it never serves neither stops production
nor steers sync, and is banned on repeat (sans-IO cores on a manual clock)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from netdiag.node.core import NodeCore
from netdiag.node.messages import GetBlocks, Status
from tests.unit.node.corekit import MemLink, World, lab

SECONDS = 40.0


class Liar:
    """Completes the handshake, claims height 10^9 every second, never serves a block;
    comes back with a fresh key whenever it is banned."""

    def __init__(self, world: World, core: NodeCore, host: str) -> None:
        self.world, self.core, self.host = world, core, host
        self.link: MemLink | None = None
        self.keys_used = 0
        self.asked = 0

    def tick(self) -> None:
        if self.link is not None:
            self.asked += sum(isinstance(m, GetBlocks) for m in self.link.sent)
            self.link.sent.clear()
        if self.link is None or not self.link.is_open:
            self.link = self.world.attach(self.core, host=self.host)
            self.keys_used += 1
        tip = hashlib.sha256(b"lie %d" % self.keys_used).digest()
        msg = Status(10**9, tip, self.core.chain.genesis_hash)
        self.link.receive(msg, 64)
        self.world.sched.call_later(1.0, self.tick)


def grow(tmp: Path, liars: bool) -> tuple[list[NodeCore], list[Liar], World]:
    spec, keys = lab(3)
    world = World(tmp, spec)
    cores = [world.node(f"v{i}", key=k, min_peers_to_produce=-1) for i, k in enumerate(keys)]
    for i, a in enumerate(cores):
        for b in cores[i + 1 :]:
            world.connect(a, b)
    gang = [Liar(world, c, f"10.7.7.{i}") for i, c in enumerate(cores)] if liars else []
    for liar in gang:
        liar.tick()
    world.run(SECONDS)
    return cores, gang, world


def test_one_liar_per_node_keeps_the_chain_rate(tmp_path: Path) -> None:
    normal, _, _ = grow(tmp_path / "normal", liars=False)
    attacked, gang, world = grow(tmp_path / "liars", liars=True)
    base = min(c.height for c in normal)
    got = min(c.height for c in attacked)
    assert base > 20, "the control chain grows"
    assert got >= 0.9 * base, f"{got} blocks with liars against {base} without"
    for core, liar in zip(attacked, gang, strict=True):
        assert core.synchronized(), "an unserved claim does not make us unsynchronized"
        assert liar.asked > 0, "the claim was checked (its tip asked for)"
        assert liar.keys_used >= 2, "the liar was banned and had to come back with a new key"
        assert world.events(core.chain.store.path.parent.name, "peer_banned")
