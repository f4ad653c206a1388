"""Token bucket (bytes per second with a burst), refilled from an explicit clock.

The relay hot path only calls :meth:`TokenBucket.take` (no clock read); the periodic tick
calls :meth:`TokenBucket.refill`.
"""

from __future__ import annotations


class TokenBucket:
    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = float(rate)
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now

    def refill(self, now: float) -> None:
        dt = now - self.stamp
        if dt > 0:
            self.tokens = min(self.burst, self.tokens + dt * self.rate)
            self.stamp = now

    def take(self, n: int) -> bool:
        """Spend ``n`` tokens if available."""
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False
