"""Thin asyncio transport around the sans-I/O PeerProtocol: one Connection per TCP stream.

The read loop enforces the handshake deadline, the idle timeout and each frame's own deadline
(readdeadline.py), throttles reads to the per-peer byte rate, drops messages over the per-peer
message rate, and does TLS itself over memory BIOs (tlsio.py) inside the handshake deadline.
Frames go out in priority order (outbox.py). A peer whose unread output exceeds the write-buffer
cap, who takes too little of our waiting output (stallwatch.py), or whose buffered bytes exceed
its memory budget is cut: the socket is reset, so what the node and the kernel held for it is
freed at once (a plain close would keep it until the peer reads it, which it never does). A
graceful close (ban, idle, shutdown) whose last output still waits keeps the same watch and
resets the socket once the peer takes too little of it; what the kernel holds once asyncio has
closed the fd is bounded by TCP_USER_TIMEOUT (the write-stall timeout), set before the close.
Everything the peer sends is handed to a ConnectionHandler.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Callable
from typing import Protocol

from netdiag.node.limits import TokenBucket
from netdiag.node.messages import Message
from netdiag.node.outbox import Outbox
from netdiag.node.protocol import (
    Event,
    HandshakeComplete,
    MessageReceived,
    PeerClosed,
    PeerProtocol,
    State,
    Violation,
)
from netdiag.node.readdeadline import ReadDeadline
from netdiag.node.resources import MemoryBudget
from netdiag.node.sockets import (
    bound_unacknowledged,
    queued_bytes,
    reset,
    socket_cookie,
    tcp_bytes_acked,
    tcp_segments,
)
from netdiag.node.stallwatch import StallWatch, Verdict
from netdiag.node.tls import peer_cert_key
from netdiag.node.tlsio import TlsClosed, TlsSession

READ_CHUNK = 64 << 10


# after a goodbye or a ban (close with flush=False) more than this of our output still waiting
# (asyncio's buffer + the kernel's send queue) is dropped with a reset instead of a graceful close
UNWANTED_MAX = 16 << 10


class ConnectionHandler(Protocol):
    def on_open(self, conn: Connection) -> str | None: ...  # reason to refuse, or None
    def on_message(self, conn: Connection, msg: Message, size: int) -> None: ...
    def on_violation(self, conn: Connection, v: Violation) -> None: ...
    def on_limit(self, conn: Connection, limit: str) -> None: ...
    def on_closed(self, conn: Connection, reason: str) -> None: ...


class Connection:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        proto: PeerProtocol,
        outbound: bool,
        *,
        msg_rate: float,
        bytes_rate: float,
        max_write_buffer: int,
        handshake_timeout_s: float,
        idle_timeout_s: float,
        dialed_addr: str | None = None,
        tls: TlsSession | None = None,
        budget: MemoryBudget | None = None,
        ip_msgs: TokenBucket | None = None,
        send_priority: bool = True,
        notsent_lowat: int = 0,
        write_stall_timeout_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.proto = proto
        self.outbound = outbound
        self.dialed_addr = dialed_addr
        peer = writer.get_extra_info("peername") or ("?", 0)
        self.remote_host, self.remote_port = str(peer[0]), int(peer[1])
        self.cookie = socket_cookie(writer.get_extra_info("socket"))
        self._tls = tls
        self.tls = tls is not None
        self.budget = budget
        self.msg_bucket = TokenBucket(msg_rate, 2 * msg_rate, time.monotonic)
        self.byte_bucket = TokenBucket(bytes_rate, 2 * bytes_rate, time.monotonic)
        self.ip_msgs = ip_msgs  # shared by every inbound connection from our remote's IP
        self.max_write_buffer = max_write_buffer
        # output waiting for a peer that takes too little of it is cut (stallwatch.py; 0 =
        # off), judged by a timer a write starts when none runs, which runs while something
        # waits (_watch_stall), on ``clock``: no syscall per write, two per check
        self._watch = StallWatch(write_stall_timeout_s)
        self._clock = clock
        self._stall_timer: asyncio.TimerHandle | None = None
        # progress is what the peer acknowledged (TCP_INFO) where the socket reports it, else
        # what the socket took from us; decided once, so the two are never compared
        self._acked = tcp_bytes_acked(writer.get_extra_info("socket"))
        self._handler: ConnectionHandler | None = None  # set by run(): limits are reported
        self.handshake_timeout_s = handshake_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.connected_at = time.monotonic()
        self.last_recv = self.connected_at
        self._deadline = ReadDeadline()  # idle, or the frame in flight's own deadline
        self.peer_id: bytes | None = None
        self.listen_addr: str | None = None
        self.probe = False  # dialed as a discovery probe (the shell knows; the address does not)
        self.violations = 0
        self.close_reason: str | None = None
        self.bytes_out = 0  # TCP payload written to the socket (TLS records when TLS is on)
        self.bytes_in = 0
        self.segs: tuple[int, int] = (0, 0)  # tcp_info segments out, in; read at close
        # frames reach the socket in priority order (outbox.py); every write goes through
        # _write, every flush ends in _check_held
        self._out = Outbox(
            writer, proto, tls, self._write, self._check_held,
            closed=lambda: self.close_reason is not None,
            send_priority=send_priority, notsent_lowat=notsent_lowat,
        )  # fmt: skip

    @property
    def version(self) -> int:
        return self.proto.version

    @property
    def write_stall_timeout_s(self) -> float:
        return self._watch.timeout_s

    @property
    def wire_bytes(self) -> tuple[int, int, int, int]:
        return self.bytes_out, self.bytes_in, *self.segs

    @property
    def send_backlog(self) -> int:
        return self._out.backlog

    @property
    def write_held(self) -> int:
        """Bytes this connection holds for the peer: our queue and asyncio's buffer."""
        held = 0 if self.writer.is_closing() else self.writer.transport.get_write_buffer_size()
        return held + self._out.queued

    @property
    def taken(self) -> int:
        """Bytes the socket has taken from us so far (written minus asyncio's buffer)."""
        if self.writer.is_closing() and not self._watch.close_wait:
            return self.bytes_out
        return self.bytes_out - self.writer.transport.get_write_buffer_size()

    @property
    def progress(self) -> int:
        """How far the peer has got with our output: bytes it acknowledged (tcpi_bytes_acked,
        one getsockopt) — it received them, however slowly it reads — or, on a socket that does
        not report that (not TCP), bytes the socket has taken from us (``taken``). Not ``taken``
        on TCP: with the unsent bound lifted (LOWAT_LIFTED) the kernel takes more only after
        about a third of a send buffer of megabytes has drained, which a peer reading 100 KB/s
        takes ~15 s to do, though it receives bytes all the while."""
        if self._acked is None:
            return self.taken
        if not self.writer.is_closing() or self._watch.close_wait:
            acked = tcp_bytes_acked(self.writer.get_extra_info("socket"))
            if acked is not None:  # else (the socket failed): no progress; the read loop sees it
                self._acked = acked
        return self._acked

    def _write(self, data: bytes) -> None:
        self.bytes_out += len(data)
        self.writer.write(data)
        # not from close()'s own flush: a graceful close starts (or keeps) its watch itself
        watch = self.write_stall_timeout_s > 0 and self.close_reason is None
        if watch and self._stall_timer is None:
            self._start_watch()

    async def _read(self, timeout: float) -> bytes:
        # asyncio.timeout, not wait_for: wait_for makes a Task per read (a cost on every frame)
        async with asyncio.timeout(max(timeout, 0)):
            data = await self.reader.read(READ_CHUNK)
        self.bytes_in += len(data)
        return data

    @property
    def direction(self) -> str:
        return "outbound" if self.outbound else "inbound"

    @property
    def address(self) -> str:
        return f"{self.remote_host}:{self.remote_port}"

    @property
    def is_open(self) -> bool:
        return self.proto.state is State.OPEN and self.close_reason is None

    def send(self, msg: Message) -> None:
        if self.is_open:
            self._out.send(msg)

    def _check_held(self) -> None:
        held = self.write_held
        if held > self.max_write_buffer:
            self.cut(
                "write_buffer",
                f"write buffer over limit: peer does not read ({held} bytes unread, "
                f"cap {self.max_write_buffer})",
            )
            return
        self._account()

    def _start_watch(self) -> None:
        """Start the stall watch from the progress so far: one getsockopt and one ioctl, at
        most once per check interval (a watch keeps running while output waits, in the node or
        the kernel)."""
        self._watch.start(self.progress, self._outstanding(), self._clock())
        self._watch_stall()

    def _kernel_queued(self) -> int:
        """The kernel's send queue (one ioctl), where progress is acknowledged bytes: else
        (not TCP) what the socket took counts as progress, and its queue would never move."""
        if self._acked is None:
            return 0
        return queued_bytes(self.writer.get_extra_info("socket"))

    def _outstanding(self) -> int:
        """Our output still waiting for the peer: node queue, asyncio's buffer, kernel's."""
        outstanding = self.writer.transport.get_write_buffer_size() + self._out.queued
        return outstanding + self._kernel_queued()

    def _watch_stall(self) -> None:
        self._stall_timer = asyncio.get_running_loop().call_later(
            self._watch.interval, self.check_stall
        )

    def check_stall(self) -> None:
        """The stall watch's timer (tests call it with an injected clock): reads what waits in
        the node and the kernel and the peer's progress, and acts on the watch's decision
        (stallwatch.py): check again, stop, cut (``write_stall`` / ``write_slow``), or, after
        a graceful close, reset the socket (SO_LINGER 0, then abort)."""
        if self._stall_timer is not None:  # one timer per connection, also when called early
            self._stall_timer.cancel()
            self._stall_timer = None
        if self.write_stall_timeout_s <= 0:
            return
        if self._watch.close_wait:
            # asyncio empties its buffer on an abort, and closes the socket once it has sent it
            held = self.writer.transport.get_write_buffer_size()
        elif self.close_reason is not None or self.writer.is_closing():
            return
        else:
            held = self.write_held
        # after a close the kernel's queue counts only while asyncio still holds output
        kernel = self._kernel_queued() if held or not self._watch.close_wait else 0
        decision = self._watch.check(held, kernel, self.progress, self._clock())
        if decision.verdict is Verdict.KEEP:
            self._watch_stall()
        elif decision.verdict is Verdict.RESET:
            reset(self.writer)
        elif decision.verdict is not Verdict.DONE:
            self.cut(decision.verdict.value, decision.reason)

    def cut(self, limit: str, reason: str) -> None:
        """Close for a limit the peer hit, dropping what we hold for it (abort: a plain close
        keeps asyncio's buffer until the peer reads it), and report the limit."""
        if self.close_reason is not None:
            return
        self.close(reason, flush=False, abort=True)
        if self._handler is not None:
            self._handler.on_limit(self, limit)

    def _account(self) -> None:
        """Report what this connection holds to the memory budget; over it, close."""
        if self.budget is None or self.close_reason is not None:
            return
        held = self.proto.decoder.buffered + self.write_held
        refusal = self.budget.update(self, held)
        if refusal:
            self.close(f"memory budget: {refusal}", flush=False, abort=True)

    def close(self, reason: str, flush: bool = True, abort: bool = False) -> None:
        """Close with ``reason``; ``flush`` sends what is queued first, ``abort`` drops the
        socket at once (reset), freeing whatever asyncio still holds for it. ``flush=False``
        (the peer said goodbye, or is banned: it does not want our output) sends only our own
        Disconnect, if any, and resets the socket when more than UNWANTED_MAX of older output
        still waits, in asyncio's buffer or the kernel's send queue: a graceful close would
        keep it as an orphan bounded only by TCP_USER_TIMEOUT, which the kernel restarts
        whenever the peer's window opens for the head segment (~6.4 KB/s kept 4 MiB ~11 min),
        and ask, goodbye, reconnect would pile such orphans up."""
        if self.close_reason is not None:
            return
        self.close_reason = reason
        watching = self._stall_timer is not None  # output was already waiting: keep its mark
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        self.proto.close(reason)
        bulk = self._out.take_all()  # from here on, writes go straight to the transport
        if flush:
            self._out.flush(bulk)
            if self._tls is not None and self._tls.established and not self.writer.is_closing():
                self._write(self._tls.close())
        elif not abort and not self.writer.is_closing():
            sock = self.writer.get_extra_info("socket")
            unwanted = self.writer.transport.get_write_buffer_size() + queued_bytes(sock)
            if unwanted > UNWANTED_MAX:
                abort = True
            else:
                self._out.flush()  # our Disconnect (a ban's reason), nothing queued before it
        if abort:
            if not self.writer.is_closing():
                self.segs = tcp_segments(self.writer.get_extra_info("socket"))
            reset(self.writer)  # also when closing: a close waits for the buffer
        elif not self.writer.is_closing():
            sock = self.writer.get_extra_info("socket")
            self.segs = tcp_segments(sock)
            # once asyncio closes the fd the kernel keeps what it still holds for the peer (an
            # orphan): bound that too, by the kernel (no fd left for a check of ours)
            bound_unacknowledged(sock, self.write_stall_timeout_s)
            self.writer.close()
            transport = self.writer.transport
            if transport.get_write_buffer_size() > 0 and self.write_stall_timeout_s > 0:
                # a close waits until the peer has read what is buffered: a peer that never
                # does would hold it (and the socket) for ever, so the stall check keeps
                # running and resets the socket once the peer acknowledges nothing for
                # write_stall_timeout_s; a slow reader that keeps acknowledging gets it all
                # (what waits is bounded by the write cap it was under when we closed)
                with contextlib.suppress(RuntimeError):  # no loop: nothing can wait anyway
                    asyncio.get_running_loop()
                    self._watch.close(self.progress, self._outstanding(), self._clock(), watching)
                    self._watch_stall()

    async def run(self, handler: ConnectionHandler) -> None:
        """Drive the connection until it closes; always reports on_closed exactly once."""
        reason = "closed"
        self._handler = handler
        try:
            if self._tls is not None:
                reason = await self._tls_handshake(handler)
            if self.close_reason is None:
                self.proto.start()
                self._out.flush()
            if self._tls is not None and self.close_reason is None:
                # Application data that came in the same read as the peer's last handshake
                # record is already in the TLS buffer: hand it over before waiting for more.
                early = self._tls.decrypt(b"")
                if early:
                    self._handle_events(handler, self.proto.receive_data(early))
                    self._out.flush()
            while self.close_reason is None:
                # The handshake has one absolute deadline (a trickling peer cannot stretch it);
                # after it, each read must arrive within the idle timeout.
                now = time.monotonic()
                if self.is_open:
                    deadline, what = self.read_deadline(now)
                else:
                    deadline, what = self.connected_at + self.handshake_timeout_s, "handshake"
                try:
                    data = await self._read(deadline - now)
                except TimeoutError:
                    handler.on_limit(self, f"{what}_timeout")
                    self.close(self._timeout_reason(what, time.monotonic()))
                    break
                if not data:
                    # EOF without a goodbye: honest nodes always send one (protocol.close), and
                    # the protocol has no half-closed reader, so the peer wants none of our
                    # output; a flushing close would write our whole queue and leave it to the
                    # kernel as an orphan (close with flush=False resets above UNWANTED_MAX)
                    self.close("peer closed the connection", flush=False)
                    break
                self.last_recv = time.monotonic()
                if self._tls is not None:
                    try:
                        data = self._tls.decrypt(data)
                    except TlsClosed:  # as EOF: the peer wants none of our output
                        self.close("peer closed the TLS session", flush=False)
                        break
                    except ssl.SSLError as e:
                        reason = f"TLS error: {e.reason or e}"
                        break
                    extra = self._tls.pending_out()
                    if extra and not self.writer.is_closing():
                        self._write(extra)
                    if not data:
                        continue
                delay = self.byte_bucket.wait_time(len(data))
                if delay > 0:
                    handler.on_limit(self, "peer_bytes_rate")
                    await asyncio.sleep(delay)  # throttle: TCP backpressure reaches the sender
                events = self.proto.receive_data(data)
                self.note_frames(self.last_recv)
                if self.ip_msgs is not None:
                    n = sum(isinstance(ev, MessageReceived) for ev in events)
                    delay = self.ip_msgs.wait_time(n) if n else 0.0
                    if delay > 0:  # throttled, not scored: honest peers may share an address
                        handler.on_limit(self, "ip_msg_rate")
                        await asyncio.sleep(delay)
                self._handle_events(handler, events)
                self._out.flush()
                self._account()
        except (ConnectionError, OSError) as e:
            reason = f"connection error: {e.__class__.__name__}: {e}"
        finally:
            self.close(self.close_reason or reason)
            if self.budget is not None:
                self.budget.release(self)
            handler.on_closed(self, self.close_reason or reason)
            self._handler = None
            with contextlib.suppress(TimeoutError, ConnectionError, OSError):
                await asyncio.wait_for(self.writer.wait_closed(), 1.0)

    @property
    def frame_started(self) -> float | None:
        return self._deadline.frame_started

    def note_frames(self, now: float) -> None:
        """After bytes were decoded at ``now``: when a new frame is in flight, it started now."""
        self._deadline.note_frames(self.proto.decoder.buffered, self.proto.decoder.completed, now)

    def read_deadline(self, now: float) -> tuple[float, str]:
        """When the next read must have come, and the limit (``idle`` / ``frame``) that ends
        the peer then (readdeadline.py)."""
        pending = self.proto.decoder.pending_len
        return self._deadline.next(self.last_recv, self.idle_timeout_s, pending)

    def _timeout_reason(self, what: str, now: float) -> str:
        dec = self.proto.decoder
        if what == "handshake":
            return f"handshake timeout after {self.handshake_timeout_s:g} s"
        if what == "idle":
            part = f" ({dec.buffered} bytes of a frame never completed)" if dec.buffered else ""
            return f"idle timeout after {self.idle_timeout_s:g} s{part}"
        return self._deadline.frame_reason(now, dec.buffered, dec.pending_len)

    async def _tls_handshake(self, handler: ConnectionHandler) -> str:
        """The TLS handshake, inside the connection's absolute handshake deadline. Returns the
        close reason if it did not complete (``close_reason`` is then set)."""
        assert self._tls is not None
        try:
            out = self._tls.handshake()
            while True:
                if out:
                    self._write(out)
                if self._tls.established:
                    return "closed"
                left = self.connected_at + self.handshake_timeout_s - time.monotonic()
                data = await self._read(left)
                if not data:
                    self.close("peer closed the connection during the TLS handshake", flush=False)
                    return "tls"
                out = self._tls.handshake(data)
        except TimeoutError:
            handler.on_limit(self, "handshake_timeout")
            self.close(f"TLS handshake timeout after {self.handshake_timeout_s:g} s", flush=False)
        except ssl.SSLError as e:
            self.close(f"TLS handshake failed: {e.reason or e}", flush=False)
        return "tls"

    def _handle_events(self, handler: ConnectionHandler, events: list[Event]) -> None:
        for ev in events:
            if self.close_reason is not None:
                return
            if isinstance(ev, MessageReceived):
                if not self.msg_bucket.take():
                    handler.on_limit(self, "peer_msg_rate")
                    continue  # dropped; the handler scores the peer
                handler.on_message(self, ev.message, ev.size)
            elif isinstance(ev, HandshakeComplete):
                self.peer_id = ev.peer_id
                if ev.hello.listen_port:
                    self.listen_addr = f"{self.remote_host}:{ev.hello.listen_port}"
                refusal = self._check_tls_binding(ev.peer_id) or handler.on_open(self)
                if refusal:
                    self.close(refusal)
            elif isinstance(ev, Violation):
                self.violations += 1
                handler.on_violation(self, ev)
                self.close(f"protocol violation: {ev.reason}: {ev.detail}")
            elif isinstance(ev, PeerClosed):
                self.close(f"peer said goodbye: {ev.reason}", flush=False)

    def _check_tls_binding(self, peer_id: bytes) -> str | None:
        """Dialer side: the TLS certificate must carry the key the peer just proved."""
        if not (self.tls and self.outbound):
            return None
        key = peer_cert_key(self._tls.obj if self._tls is not None else None)
        if key != peer_id:
            return "TLS certificate key does not match the peer's node id"
        return None
