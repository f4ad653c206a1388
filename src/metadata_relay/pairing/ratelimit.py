"""Rate limits (sans-I/O: every check takes ``now``): per-key sliding window, a global
failure budget with cool-down, and a per-session token bucket."""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from typing import Any


class SlidingWindow:
    """At most ``limit`` events per ``window`` seconds per key (sliding-window log).

    Memory is bounded: at most ``max_keys`` keys are tracked (least recently used dropped).
    """

    def __init__(self, limit: int, window: float, max_keys: int = 100_000) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._log: OrderedDict[str, deque[float]] = OrderedDict()

    def check(self, key: str, now: float) -> float:
        """Record an event; 0.0 if allowed, else seconds until one is allowed again."""
        q = self._log.get(key)
        if q is None:
            q = deque()
            self._log[key] = q
            if len(self._log) > self.max_keys:
                self._log.popitem(last=False)
        else:
            self._log.move_to_end(key)
        horizon = now - self.window
        while q and q[0] <= horizon:
            q.popleft()
        if len(q) >= self.limit:
            return max(q[0] + self.window - now, 0.001)
        q.append(now)
        return 0.0

    def prune(self, now: float) -> None:
        horizon = now - self.window
        for key in [k for k, q in self._log.items() if not q or q[-1] <= horizon]:
            del self._log[key]

    def __len__(self) -> int:
        return len(self._log)


class FailureBudget:
    """Global budget of failed claim redemptions (all IPs together).

    More than ``limit`` failures within ``window`` seconds starts a cool-down of ``cooldown``
    seconds during which every redemption attempt is refused; afterwards the budget is fresh.
    """

    def __init__(self, limit: int, window: float, cooldown: float) -> None:
        self.limit = limit
        self.window = window
        self.cooldown = cooldown
        self._failures: deque[float] = deque()
        self.blocked_until = 0.0
        self.trips = 0

    def blocked(self, now: float) -> float:
        """Seconds left in the cool-down (0.0 when redemptions are allowed)."""
        return max(self.blocked_until - now, 0.0)

    def failure(self, now: float) -> None:
        horizon = now - self.window
        q = self._failures
        while q and q[0] <= horizon:
            q.popleft()
        q.append(now)
        if len(q) > self.limit:
            self.blocked_until = now + self.cooldown
            self.trips += 1
            q.clear()


class SharedFailureBudget:
    """The failure budget shared by every replica through Redis (``pairing:budget:<window
    number>`` counters, this window plus the previous one compared with the limit, so it is
    conservative; ``pairing:budget:cooldown`` exists while tripped).

    Any Redis error falls back to the replica's own :class:`FailureBudget`.
    """

    COOLDOWN_KEY = "pairing:budget:cooldown"

    def __init__(self, redis: Any, local: FailureBudget) -> None:
        self.redis = redis
        self.local = local

    async def blocked(self, now: float) -> float:
        local = self.local.blocked(now)
        if local:
            return local
        try:
            ms = int(await self.redis.pttl(self.COOLDOWN_KEY))
        except Exception:
            return 0.0
        return ms / 1000.0 if ms > 0 else 0.0

    async def failure(self, now: float) -> None:
        """``now`` is wall-clock time (shared by replicas)."""
        self.local.failure(now)
        window = self.local.window
        slot = int(now // window)
        key = f"pairing:budget:{slot}"
        try:
            n = int(await self.redis.incr(key))
            if n == 1:
                await self.redis.expire(key, int(window * 2) + 1)
            # the previous window counts too: never split a burst at a window boundary
            n += int(await self.redis.get(f"pairing:budget:{slot - 1}") or 0)
            if n > self.local.limit:
                await self.redis.set(self.COOLDOWN_KEY, "1",
                                     px=int(self.local.cooldown * 1000), nx=True)
        except Exception:
            return


class TokenBucket:
    """``rate`` events/s with bursts of ``burst``."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def take(self, now: float) -> bool:
        tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if tokens < 1.0:
            self.tokens = tokens
            return False
        self.tokens = tokens - 1.0
        return True


def retry_after_header(seconds: float) -> int:
    return max(1, math.ceil(seconds))
