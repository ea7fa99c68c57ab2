"""Per-source token buckets for handshake initiations under load (wireguard-go's ratelimiter)."""

from __future__ import annotations

PACKETS_PER_SECOND = 20
PACKETS_BURSTABLE = 5
GARBAGE_AFTER = 1.0


class RateLimiter:
    def __init__(self, rate: float = PACKETS_PER_SECOND, burst: int = PACKETS_BURSTABLE) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[bytes, tuple[float, float]] = {}  # source -> (tokens, last)
        self._last_gc = 0.0

    def allow(self, source: bytes, now: float) -> bool:
        if now - self._last_gc > GARBAGE_AFTER:
            self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] <= GARBAGE_AFTER}
            self._last_gc = now
        tokens, last = self._buckets.get(source, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens < 1:
            self._buckets[source] = (tokens, now)
            return False
        self._buckets[source] = (tokens - 1, now)
        return True
