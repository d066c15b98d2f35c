"""A peer's bulk frames waiting for its socket (no I/O).

With ``notsent_lowat_bytes`` set, the kernel keeps only that many unsent bytes per peer socket
(TCP_NOTSENT_LOWAT) and the transport hands it bulk frames (outbox.low_priority:
transactions, beacons, snapshot announcements, IHAVE) only while asyncio's own buffer is empty;
the rest waits here, in order, so a block frame — written at once, past the bound — overtakes
every bulk frame the socket has not taken yet.
"""

from __future__ import annotations

from collections import deque


class SendQueue:
    def __init__(self) -> None:
        self._frames: deque[bytes] = deque()
        self.size = 0  # bytes queued

    def __bool__(self) -> bool:
        return bool(self._frames)

    def push(self, frame: bytes) -> None:
        if frame:
            self._frames.append(frame)
            self.size += len(frame)

    def take(self, budget: int) -> bytes:
        """Whole frames for one write, in order: at least one frame, then more while the total
        stays within ``budget`` bytes. Empty when nothing is queued."""
        out: list[bytes] = []
        size = 0
        q = self._frames
        while q and (not out or size + len(q[0]) <= budget):
            frame = q.popleft()
            out.append(frame)
            size += len(frame)
        self.size -= size
        return b"".join(out)

    def take_all(self) -> bytes:
        """Everything queued (a closing connection's last write)."""
        data = b"".join(self._frames)
        self._frames.clear()
        self.size = 0
        return data
