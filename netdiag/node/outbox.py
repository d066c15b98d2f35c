"""A connection's write side (asyncio shell): the protocol's frames reach the socket in
priority order.

Frames a peer can wait for (``low_priority``) wait for the end of the loop turn and go out
together (one write, one TLS record run), after any block frame sent meanwhile. With
``notsent_lowat`` > 0 the kernel keeps at most that many unsent bytes (TCP_NOTSENT_LOWAT) and
those frames wait in our queue (sendqueue.py) until the socket takes them, so a block still
overtakes the tx gossip queued before it; an urgent frame lifts the bound while it goes out.
0: every flush is written at once. What is written, and what the connection holds then, the
connection counts and polices (transport.py: the write cap, the stall watch, the budget).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable

from netdiag.node.messages import TOPIC_BLOCKS, IHave, Message, Publish
from netdiag.node.protocol import PeerProtocol
from netdiag.node.sendqueue import SendQueue
from netdiag.node.sockets import unsent_bytes
from netdiag.node.tlsio import TlsSession

LOWAT_LIFTED = 1 << 30  # TCP_NOTSENT_LOWAT while an urgent frame goes out: no bound


def low_priority(msg: Message) -> bool:
    """Frames that wait for the end of the loop turn and go out after any block frame sent
    meanwhile: gossip other than blocks (transactions, beacons, snapshot announcements) and
    IHAVE adverts. Blocks, control, sync and handshake frames are written at once."""
    return (isinstance(msg, Publish) and msg.topic != TOPIC_BLOCKS) or isinstance(msg, IHave)


def set_notsent_lowat(writer: asyncio.StreamWriter, lowat: int) -> None:
    """Keep at most ``lowat`` unsent bytes in the kernel for this socket, and let asyncio's
    buffer pause the writer as soon as it holds anything (high-water mark 0): unsent data
    then waits in the connection's queue, where it can still be reordered."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):  # not TCP (a test's socketpair): nothing to bound
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, lowat)
    writer.transport.set_write_buffer_limits(high=0)


class Outbox:
    def __init__(
        self,
        writer: asyncio.StreamWriter,
        proto: PeerProtocol,
        tls: TlsSession | None,
        write: Callable[[bytes], None],
        after_flush: Callable[[], None],
        *,
        closed: Callable[[], bool],
        send_priority: bool,
        notsent_lowat: int,
    ) -> None:
        self.writer = writer
        self.proto = proto
        self._tls = tls
        self._write = write  # the connection's one write: counts bytes, starts the stall watch
        self._after_flush = after_flush  # the connection's write cap and memory budget
        self._closed = closed  # the connection is closing: the pump stops
        # low-priority frames of this loop turn, written together after the turn
        self.send_priority = send_priority
        self._bulk: list[bytes] = []
        self.notsent_lowat = notsent_lowat
        self._queue: SendQueue | None = None
        self._pump_soon = False
        self.lifted = False  # the bound is lifted while an urgent frame goes out
        self._drainer: asyncio.Task[None] | None = None
        if notsent_lowat > 0:
            set_notsent_lowat(writer, notsent_lowat)
            self._queue = SendQueue()

    @property
    def queued(self) -> int:
        """Bytes of bulk frames waiting in our queue (not yet given to asyncio)."""
        return self._queue.size if self._queue is not None else 0

    @property
    def backlog(self) -> int:
        """Bytes a block frame sent now finds ahead of it: asyncio's buffer and the kernel's
        unsent bytes."""
        if self.writer.is_closing():
            return 0
        # not the queued bulk frames: a block frame overtakes them (low_priority)
        held = self.writer.transport.get_write_buffer_size()
        return held + unsent_bytes(self.writer.get_extra_info("socket"))

    def take_all(self) -> bytes:
        """At close: every frame still waiting here, in order; later writes go straight to
        the transport."""
        bulk, self._bulk = b"".join(self._bulk), []
        if self._queue is not None:
            bulk = self._queue.take_all() + bulk
            self._queue = None
            if self._drainer is not None:
                self._drainer.cancel()
        return bulk

    def send(self, msg: Message) -> None:
        """Send ``msg`` (the connection is open): at once, or as bulk after the loop turn."""
        self.proto.send(msg)
        if not (self.send_priority and low_priority(msg)):
            self.flush()  # a block (or control frame) goes ahead of the queued bulk
            return
        if self._queue is not None:  # bulk waits in our queue until the socket takes it
            self._queue.push(self.proto.data_to_send())
            if not self._pump_soon:
                self._pump_soon = True
                asyncio.get_running_loop().call_soon(self._pump)
            return
        if not self._bulk:
            asyncio.get_running_loop().call_soon(self._flush_bulk)
        self._bulk.append(self.proto.data_to_send())

    def _flush_bulk(self) -> None:
        data, self._bulk = b"".join(self._bulk), []
        self.flush(data)

    def flush(self, queued: bytes = b"") -> None:
        """Write ``queued`` and what the protocol has to send now, past the queued bulk."""
        data = queued + self.proto.data_to_send()
        if data and not self.writer.is_closing():
            if self._tls is not None:
                data = self._tls.encrypt(data)
            if self._queue is not None:
                self._write_urgent(data)
            else:
                self._write(data)
            self._after_flush()

    def _write_urgent(self, data: bytes) -> None:
        """A block, control or sync frame goes to the socket at once, past the unsent bound:
        the bound is lifted for it (one setsockopt) when it is large or when the socket has
        already refused bytes, so the kernel takes it whole instead of in pieces paced by the
        loop's wakeups; the next bulk write restores the bound (``_pump``)."""
        transport = self.writer.transport
        if not self.lifted and (
            len(data) > self.notsent_lowat // 2 or transport.get_write_buffer_size() > 0
        ):
            self._set_lowat(LOWAT_LIFTED)
        self._write(data)
        if not self.lifted and transport.get_write_buffer_size() > 0:
            self._set_lowat(LOWAT_LIFTED)  # refused: asyncio flushes it on the next turn
        if self.lifted and not self._pump_soon:
            # the pump restores the bound once asyncio's buffer is empty, also when no bulk
            # write follows (send_priority off sends every frame this way)
            self._pump_soon = True
            asyncio.get_running_loop().call_soon(self._pump)

    def _set_lowat(self, value: int) -> None:
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, value)
        self.lifted = value != self.notsent_lowat

    def _pump(self) -> None:
        """Write queued bulk frames while asyncio's buffer is empty, i.e. while the kernel
        takes them (it refuses more than ``notsent_lowat`` unsent bytes); what is left waits
        in the queue for the buffer to drain."""
        self._pump_soon = False
        q = self._queue
        if q is None or not (q or self.lifted):
            return
        if self._closed() or self.writer.is_closing():
            return
        transport = self.writer.transport
        if transport.get_write_buffer_size() == 0:
            if self.lifted:
                self._set_lowat(self.notsent_lowat)
            while q and transport.get_write_buffer_size() == 0 and not self.writer.is_closing():
                data = q.take(self.notsent_lowat)
                if self._tls is not None:
                    data = self._tls.encrypt(data)
                self._write(data)
        if (q or self.lifted) and self._drainer is None and transport.get_write_buffer_size() > 0:
            self._drainer = asyncio.get_running_loop().create_task(self._drain_then_pump())
        self._after_flush()

    async def _drain_then_pump(self) -> None:
        try:
            await self.writer.drain()  # high-water mark 0: returns once asyncio's buffer is empty
        except (ConnectionError, OSError):
            return  # the read loop sees the close and reports it
        finally:
            self._drainer = None
        self._pump()
