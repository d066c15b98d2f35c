"""A peer's frames waiting for its socket, in two priorities (no I/O).

With ``notsent_lowat_bytes`` set, the kernel keeps only that many unsent bytes per peer socket
(TCP_NOTSENT_LOWAT) and the transport writes to the socket only while asyncio's own buffer is
empty; everything else waits here, where a block frame can still overtake the transaction
gossip queued before it. Urgent frames (blocks, control, sync, handshake) leave first in the
order they came; bulk frames (transport.low_priority) after them, in theirs.
"""

from __future__ import annotations

from collections import deque


class SendQueue:
    def __init__(self) -> None:
        self._urgent: deque[bytes] = deque()
        self._bulk: deque[bytes] = deque()
        self.urgent_bytes = 0
        self.bulk_bytes = 0

    @property
    def size(self) -> int:
        return self.urgent_bytes + self.bulk_bytes

    def __bool__(self) -> bool:
        return bool(self._urgent or self._bulk)

    def push(self, frame: bytes, urgent: bool) -> None:
        if not frame:
            return
        if urgent:
            self._urgent.append(frame)
            self.urgent_bytes += len(frame)
        else:
            self._bulk.append(frame)
            self.bulk_bytes += len(frame)

    def take(self, budget: int, bulk: bool = True) -> bytes:
        """Whole frames for one write, urgent ones first: at least one frame, then more while
        the total stays within ``budget`` bytes; bulk frames only if ``bulk``. Empty when
        nothing (eligible) is queued."""
        out: list[bytes] = []
        size = 0
        for q in (self._urgent, self._bulk) if bulk else (self._urgent,):
            while q and (not out or size + len(q[0]) <= budget):
                frame = q.popleft()
                out.append(frame)
                size += len(frame)
                if q is self._urgent:
                    self.urgent_bytes -= len(frame)
                else:
                    self.bulk_bytes -= len(frame)
            if q:  # the next frame does not fit: keep the order, stop here
                break
        return b"".join(out)

    def take_all(self) -> bytes:
        """Everything queued, urgent frames first (for a closing connection's last write)."""
        data = b"".join([*self._urgent, *self._bulk])
        self._urgent.clear()
        self._bulk.clear()
        self.urgent_bytes = self.bulk_bytes = 0
        return data
