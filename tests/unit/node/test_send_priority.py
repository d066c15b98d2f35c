"""The per-peer send queue (issue 17 item 3): gossip other than blocks waits for the end of the
loop turn and goes out in one write, so a block frame sent meanwhile overtakes the transaction
frames queued before it; with ``send_priority`` off, frames go out in the order sent."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from netdiag.node.crypto import Identity
from netdiag.node.messages import TOPIC_BLOCKS, TOPIC_TXS, Message, Ping, Publish
from netdiag.node.outbox import low_priority
from netdiag.node.protocol import PeerProtocol
from netdiag.node.transport import Connection
from tests.unit.node.test_transport_bytes import GEN, NET, Handler


def conn(r: asyncio.StreamReader, w: asyncio.StreamWriter, ident: Identity, outbound: bool,
         priority: bool = True, lowat: int = 0) -> Connection:  # fmt: skip
    return Connection(
        r, w, PeerProtocol(ident, NET, GEN, 0), outbound,
        msg_rate=1000, bytes_rate=1e9, max_write_buffer=1 << 20,
        handshake_timeout_s=10, idle_timeout_s=10, send_priority=priority,
        notsent_lowat=lowat,
    )  # fmt: skip


async def arrival_order(priority: bool, sends: list[Message], lowat: int = 0) -> list[Message]:
    """What the receiving end gets when ``sends`` are sent within one loop turn."""
    a_id, b_id = Identity.generate(), Identity.generate()
    hb = Handler()
    sides: dict[str, Connection] = {}

    async def accept(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        sides["b"] = conn(r, w, b_id, False)
        await sides["b"].run(hb)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    r, w = await asyncio.open_connection("127.0.0.1", port)
    a = conn(r, w, a_id, True, priority, lowat)
    ha = Handler()
    task = asyncio.create_task(a.run(ha))
    await asyncio.wait_for(ha.opened.wait(), 10)
    for _ in range(200):  # the server side is open too
        if "b" in sides and sides["b"].is_open:
            break
        await asyncio.sleep(0.01)
    for msg in sends:  # one loop turn: no await in between
        a.send(msg)
    for _ in range(500):
        if len(hb.got) >= len(sends):
            break
        await asyncio.sleep(0.01)
    a.close("done")
    await asyncio.wait_for(task, 10)
    server.close()
    await server.wait_closed()
    return list(hb.got)


TX1, TX2 = Publish(TOPIC_TXS, b"tx-1"), Publish(TOPIC_TXS, b"tx-2")
BLOCK = Publish(TOPIC_BLOCKS, b"block")


def test_only_non_block_gossip_waits() -> None:
    assert low_priority(TX1) and not low_priority(BLOCK) and not low_priority(Ping(1))


@pytest.mark.parametrize("lowat", [0, 16 << 10])  # the node's own queue (notsent_lowat) or not
@pytest.mark.parametrize("priority", [True, False])
def test_a_block_frame_overtakes_the_queued_tx_frames(
    tmp_path: Path, priority: bool, lowat: int
) -> None:
    got = asyncio.run(arrival_order(priority, [TX1, TX2, BLOCK, Ping(7)], lowat))
    if priority:  # the block and the control frame at once, then the txs in their order
        assert got == [BLOCK, Ping(7), TX1, TX2]
    else:
        assert got == [TX1, TX2, BLOCK, Ping(7)]
