"""When the next read from an open connection must come, sans I/O: idle, or the frame in flight.

Idle is no byte for idle_timeout_s. A frame in flight has its own deadline from its first byte:
idle_timeout_s + its declared length / MIN_PEER_RATE (2 MiB: ~316 s, 4 MiB: ~572 s), else a
peer trickling one frame a byte per idle timeout would hold up to max_frame_bytes buffered in
the decoder for ever (idle alone counts any byte). A deadline per frame, not "a complete frame
per idle timeout": that cut every honest sender of a large sync answer slower than ~300 kbit/s.
The transport feeds in what its decoder holds and the time; this module reads no clock.
"""

from __future__ import annotations

from netdiag.node.limits import MIN_PEER_RATE


class ReadDeadline:
    def __init__(self) -> None:
        # the frame in flight: its first byte arrived then (None: the decoder holds nothing)
        self.frame_started: float | None = None
        self._frame_count = 0  # the decoder's completed count when that frame started

    def note_frames(self, buffered: int, completed: int, now: float) -> None:
        """After bytes were decoded at ``now``, the decoder holding ``buffered`` bytes of an
        incomplete frame, ``completed`` frames in all: when a new frame is in flight, it
        started now."""
        if buffered == 0:
            self.frame_started = None
        elif self.frame_started is None or completed != self._frame_count:
            self.frame_started, self._frame_count = now, completed

    def next(self, last_recv: float, idle_timeout_s: float, pending_len: int) -> tuple[float, str]:
        """When the next read must have come, and the limit that ends the peer then: ``idle``
        or ``frame`` (``pending_len``: the frame in flight's declared length, 0 if unknown)."""
        idle = last_recv + idle_timeout_s
        if self.frame_started is None:
            return idle, "idle"
        frame = self.frame_started + idle_timeout_s
        frame += pending_len / MIN_PEER_RATE
        return (frame, "frame") if frame < idle else (idle, "idle")

    def frame_reason(self, now: float, buffered: int, pending_len: int) -> str:
        took = now - (self.frame_started or now)
        return (
            f"frame timeout: {buffered} of {pending_len + 4} bytes of a frame in "
            f"{took:.0f} s (never completed; slower than {MIN_PEER_RATE} B/s)"
        )
