"""TLS done by the node itself over ``ssl.MemoryBIO``, not by asyncio's SSL transport.

The socket stays a plain TCP stream; this session turns ciphertext into plaintext and back.
So the node sees a connection from ``accept()``, counts it against its limits while the TLS
handshake runs, bounds that handshake by the same absolute deadline as the node handshake, and
counts a failed TLS handshake toward the IP ban like any other. Nothing is left to asyncio's
sslproto, whose failed-handshake path leaks memory on CPython 3.11 (python/cpython#109534): a
failed session here is two memory BIOs and an SSLObject, freed with the connection.
"""

from __future__ import annotations

import contextlib
import ssl

READ_SIZE = 64 << 10


class TlsClosed(ConnectionError):
    """The peer ended the TLS session (close_notify)."""


class TlsSession:
    def __init__(self, ctx: ssl.SSLContext, server_side: bool) -> None:
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self._in, self._out, server_side=server_side)
        self.established = False

    def handshake(self, data: bytes = b"") -> bytes:
        """Feed received bytes; returns bytes to send. ``established`` turns True when done.
        Raises ``ssl.SSLError`` when the handshake fails."""
        if data:
            self._in.write(data)
        try:
            self.obj.do_handshake()
            self.established = True
        except ssl.SSLWantReadError:
            pass
        return self._out.read()

    def decrypt(self, data: bytes) -> bytes:
        """Ciphertext in, plaintext out (possibly empty: a partial record, or a ticket)."""
        self._in.write(data)
        chunks: list[bytes] = []
        while True:
            try:
                chunk = self.obj.read(READ_SIZE)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError as e:
                raise TlsClosed("peer sent close_notify") from e
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def encrypt(self, data: bytes) -> bytes:
        if data:
            self.obj.write(data)
        return self._out.read()

    def pending_out(self) -> bytes:
        """Bytes the session produced on its own (alerts, tickets, key updates)."""
        return self._out.read()

    def close(self) -> bytes:
        """A close_notify to send (best effort)."""
        with contextlib.suppress(ssl.SSLError):
            self.obj.unwrap()
        return self._out.read()
