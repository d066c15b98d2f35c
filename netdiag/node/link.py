"""A peer connection as the sans-IO core sees it: who it is, where it is, send and close.

``transport.Connection`` is the asyncio implementation; core tests use in-memory links.
"""

from __future__ import annotations

from typing import Protocol

from netdiag.node.messages import Message


class Link(Protocol):
    @property
    def peer_id(self) -> bytes | None: ...  # None until the handshake authenticated the peer
    @property
    def outbound(self) -> bool: ...
    @property
    def remote_host(self) -> str: ...
    @property
    def address(self) -> str: ...  # host:port of the remote end
    @property
    def direction(self) -> str: ...  # inbound | outbound
    @property
    def dialed_addr(self) -> str | None: ...
    @property
    def listen_addr(self) -> str | None: ...  # where the peer says it accepts connections
    @property
    def is_open(self) -> bool: ...
    @property
    def close_reason(self) -> str | None: ...
    @property
    def cookie(self) -> int | None: ...  # SO_COOKIE of the socket
    @property
    def tls(self) -> bool: ...
    @property
    def connected_at(self) -> float: ...
    @property
    def last_recv(self) -> float: ...
    @property
    def probe(self) -> bool: ...  # we dialed it as a discovery probe
    @property
    def version(self) -> int: ...  # protocol version spoken (the lower of the two Hellos)
    @property
    def wire_bytes(self) -> tuple[int, int, int, int]: ...  # bytes out, in; segments out, in
    @property
    def send_backlog(self) -> int: ...  # bytes written to this link and not yet sent

    def send(self, msg: Message) -> None: ...
    def close(self, reason: str, flush: bool = True) -> None: ...
