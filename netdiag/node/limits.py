"""Token buckets for per-peer message and byte rates, and the slowest rate an honest peer is
assumed to manage."""

from __future__ import annotations

from collections.abc import Callable

# The slowest an honest peer is assumed to move bytes (8 KiB/s, ~65 kbit/s): a frame in flight
# from the peer may take idle_timeout_s + its declared length / this to complete (4 MiB: ~572 s;
# 2 MiB, the largest sync answer: ~316 s), and a peer with our output waiting must acknowledge
# on average at least this since the stall watch started, with one write_stall_timeout_s of
# slack, or all that was outstanding then (stallwatch.StallWatch.check: write_slow).
# Slower peers are cut on both paths. Config-free on purpose.
MIN_PEER_RATE = 8 << 10  # bytes/s


class TokenBucket:
    def __init__(self, rate: float, burst: float, clock: Callable[[], float]) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.tokens = burst
        self.stamp = clock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self, n: float = 1.0) -> bool:
        self._refill()
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False

    def wait_time(self, n: float) -> float:
        """Seconds until ``n`` tokens are there (0 if now); takes them (may go negative)."""
        self._refill()
        self.tokens -= n
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


# The REST API (apiguard.py). Its clients are local tools reading at loopback speed, so a small
# send buffer costs them nothing and bounds what the kernel holds per connection (the kernel
# doubles it: ~256 KiB; autotuned it reached tcp_wmem max, 4 MiB here).
API_SNDBUF = 128 << 10
# a connection past api_max_connections evicts one without progress (a request, or output
# acknowledged) for at least this long: honest clients send their request at once and read
API_EVICT_AFTER_S = 1.0
# request size: aiohttp's parser takes at most this many header fields, each line at most
# API_MAX_LINE bytes (~270 KiB a request header); a POST body at most api.MAX_BODY (64 KiB)
API_MAX_HEADERS = 32
API_MAX_LINE = 8190
