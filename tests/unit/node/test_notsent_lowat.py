"""TCP_NOTSENT_LOWAT on peer sockets (issue 17 item 3): the kernel keeps only a small unsent
backlog and the frames the socket cannot take yet wait in the connection's own queue, so a
block frame sent behind a pile of transaction frames still goes out before most of them; with
the option off (0) the transaction frames already handed to the socket stay ahead of it."""

from __future__ import annotations

import asyncio
import socket

import pytest

from netdiag.node.config import load_config
from netdiag.node.crypto import Identity
from netdiag.node.errors import ConfigError
from netdiag.node.messages import TOPIC_BLOCKS, TOPIC_TXS, Publish
from netdiag.node.protocol import PeerProtocol
from netdiag.node.sendqueue import SendQueue
from netdiag.node.transport import Connection
from tests.unit.node.test_transport_bytes import GEN, NET, Handler

LOWAT = 16 << 10
TX_BODY = 4000
TXS = 400  # 1.6 MB: far more than the receiver's window and the kernel's unsent allowance


def conn(r: asyncio.StreamReader, w: asyncio.StreamWriter, ident: Identity, outbound: bool,
         lowat: int) -> Connection:  # fmt: skip
    return Connection(
        r, w, PeerProtocol(ident, NET, GEN, 0), outbound,
        msg_rate=1e6, bytes_rate=1e12, max_write_buffer=64 << 20,
        handshake_timeout_s=10, idle_timeout_s=30, notsent_lowat=lowat,
    )  # fmt: skip


async def pair(lowat: int) -> tuple[Connection, Connection, Handler, list[object]]:
    """Two open connections over loopback; the accepting side's receive buffer is small."""
    a_id, b_id = Identity.generate(), Identity.generate()
    hb = Handler()
    sides: dict[str, Connection] = {}

    async def accept(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        sides["b"] = conn(r, w, b_id, False, 0)
        await sides["b"].run(hb)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    # inherited by the accepted socket: the window stays small while the reader is paused
    server.sockets[0].setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 10)
    port = server.sockets[0].getsockname()[1]
    r, w = await asyncio.open_connection("127.0.0.1", port)
    a = conn(r, w, a_id, True, lowat)
    ha = Handler()
    task = asyncio.create_task(a.run(ha))
    await asyncio.wait_for(ha.opened.wait(), 10)
    for _ in range(500):
        if "b" in sides and sides["b"].is_open:
            break
        await asyncio.sleep(0.01)
    return a, sides["b"], hb, [task, server]


async def unpair(a: Connection, task: object, server: object) -> None:
    """Close what ``pair`` opened: the dialing side, its run task, the listener."""
    a.close("done")
    await asyncio.wait_for(task, 10)  # type: ignore[arg-type]
    server.close()  # type: ignore[attr-defined]
    await server.wait_closed()  # type: ignore[attr-defined]


async def block_position(lowat: int) -> tuple[int, int, int]:
    """Where a block frame sent after TXS transaction frames (each in its own loop turn, while
    the receiver does not read) arrives: (txs before it, txs received, socket's lowat)."""
    a, b, hb, (task, server) = await pair(lowat)
    b.writer.transport.pause_reading()
    for i in range(TXS):
        a.send(Publish(TOPIC_TXS, i.to_bytes(4, "big") + bytes(TX_BODY)))
        await asyncio.sleep(0)  # the end-of-turn write of the bulk frames
    await asyncio.sleep(0.05)
    block = Publish(TOPIC_BLOCKS, b"block")
    a.send(block)
    b.writer.transport.resume_reading()
    for _ in range(3000):
        if len(hb.got) >= TXS + 1:
            break
        await asyncio.sleep(0.01)
    sock = a.writer.get_extra_info("socket")
    opt = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT)
    await unpair(a, task, server)
    got = list(hb.got)
    assert block in got, "the block never arrived"
    return got.index(block), len(got) - 1, opt


def test_the_option_is_set_on_the_socket_and_a_block_overtakes_queued_txs() -> None:
    before, txs, opt = asyncio.run(block_position(LOWAT))
    assert opt == LOWAT
    assert txs == TXS  # nothing lost, nothing duplicated: the queue drains completely
    # only what the socket held when the block came (window + lowat + one write) is ahead
    assert before < TXS // 4, f"the block arrived after {before} of {TXS} tx frames"


def test_without_the_option_the_socket_keeps_its_order() -> None:
    before, txs, opt = asyncio.run(block_position(0))
    assert opt == 0  # the kernel default (net.ipv4.tcp_notsent_lowat) applies
    assert txs == TXS
    assert before == TXS  # every tx frame had been handed to the transport before the block


def test_queue_takes_whole_frames_in_order_within_a_budget() -> None:
    q = SendQueue()
    for f in (b"t1", b"", b"t2", b"t3"):  # an empty frame is nothing to send: ignored
        q.push(f)
    assert q.size == 6
    assert q.take(4) == b"t1t2"  # whole frames up to the budget
    assert q.take(1) == b"t3"  # at least one frame, even over the budget
    assert not q and q.size == 0 and q.take(100) == b""
    q.push(b"t4")
    q.push(b"t5")
    assert q.take_all() == b"t4t5" and not q and q.size == 0


@pytest.mark.parametrize("value", ["100", "4095", str(8 << 20), "-1"])
def test_out_of_range_lowat_is_a_one_line_error(value: str) -> None:
    env = {"NETDIAG_NODE_NOTSENT_LOWAT_BYTES": value}
    with pytest.raises(ConfigError) as e:
        load_config(None, env, {"data_dir": "d", "genesis": "g"})
    msg = str(e.value)
    assert "\n" not in msg
    assert "notsent_lowat_bytes" in msg and "NETDIAG_NODE_NOTSENT_LOWAT_BYTES" in msg


@pytest.mark.parametrize("value", ["0", "4096", str(128 << 10)])
def test_lowat_off_or_in_range_is_accepted(value: str) -> None:
    env = {"NETDIAG_NODE_NOTSENT_LOWAT_BYTES": value}
    cfg = load_config(None, env, {"data_dir": "d", "genesis": "g"})
    assert cfg.notsent_lowat_bytes == int(value)


async def lift_and_restore() -> tuple[int, int, int, int]:
    """(asyncio's buffer after a block frame 6x the bound is sent, the option then, the option
    after the next bulk write, asyncio's buffer then)."""
    a, _b, hb, (task, server) = await pair(LOWAT)
    sock = a.writer.get_extra_info("socket")
    a.send(Publish(TOPIC_BLOCKS, bytes(6 * LOWAT)))
    held_after_block = a.writer.transport.get_write_buffer_size()
    lifted = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT)
    for _ in range(500):  # the receiver reads: the block leaves, then a tx frame follows it
        if hb.got:
            break
        await asyncio.sleep(0.01)
    a.send(Publish(TOPIC_TXS, b"tx"))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    restored = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT)
    for _ in range(500):
        if len(hb.got) >= 2:
            break
        await asyncio.sleep(0.01)
    await unpair(a, task, server)
    assert len(hb.got) == 2
    return held_after_block, lifted, restored, a.writer.transport.get_write_buffer_size()


def test_a_block_larger_than_the_bound_goes_to_the_kernel_whole() -> None:
    held, lifted, restored, _ = asyncio.run(lift_and_restore())
    assert lifted > 6 * LOWAT  # the bound was lifted for the block ...
    assert held == 0  # ... so the kernel took all of it, none left for the loop to hand over
    assert restored == LOWAT  # the next bulk write put the bound back


async def bound_after_urgent_only() -> tuple[int, int]:
    """With send_priority off every frame takes the urgent path and no bulk write follows:
    (the option right after a frame 6x the bound, the option once the peer has read it)."""
    a, _b, hb, (task, server) = await pair(LOWAT)
    a._out.send_priority = False
    sock = a.writer.get_extra_info("socket")
    a.send(Publish(TOPIC_TXS, bytes(6 * LOWAT)))
    lifted = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT)
    after = lifted
    for _ in range(500):
        after = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT)
        if hb.got and after == LOWAT:
            break
        await asyncio.sleep(0.01)
    await unpair(a, task, server)
    assert hb.got, "the frame never arrived"
    return lifted, after


def test_the_bound_comes_back_without_a_bulk_write() -> None:
    lifted, after = asyncio.run(bound_after_urgent_only())
    assert lifted > 6 * LOWAT  # lifted for the large frame ...
    assert after == LOWAT  # ... and restored once it left, though no bulk write came
