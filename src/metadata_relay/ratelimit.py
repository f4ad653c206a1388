"""Rate limits any part of the service uses: a token bucket (events or bytes per second, with
bursts) and a sliding-window log of events per key. Both take the time as an argument, so a
test's clock drives them."""

from __future__ import annotations

import math
from collections import OrderedDict, deque


def retry_after_header(seconds: float) -> int:
    return max(1, math.ceil(seconds))



class TokenBucket:
    """``rate`` units per second with bursts of ``burst``, refilled from an explicit clock.
    The TURN relay's hot path calls :meth:`take` only (its periodic tick calls :meth:`refill`);
    an occasional event calls :meth:`spend`."""

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

    def take(self, n: float = 1.0) -> bool:
        """Spend ``n`` tokens if the bucket holds them."""
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False

    def spend(self, now: float, n: float = 1.0) -> bool:
        """:meth:`refill` to ``now``, then :meth:`take`."""
        self.refill(now)
        return self.take(n)

    def wait(self, n: float = 1.0) -> float:
        """Seconds until ``n`` tokens are there."""
        return max(n - self.tokens, 0.0) / self.rate if self.rate > 0 else math.inf


class Window:
    """Sliding-window log of events per key; memory bounded by ``max_keys`` (least recently
    used keys are dropped)."""

    def __init__(self, window: float, max_keys: int = 100_000) -> None:
        self.window = window
        self.max_keys = max_keys
        self._log: OrderedDict[str, deque[float]] = OrderedDict()

    def _events(self, key: str, now: float, create: bool) -> deque[float] | None:
        q = self._log.get(key)
        if q is None:
            if not create:
                return None
            q = self._log[key] = deque()
            if len(self._log) > self.max_keys:
                self._log.popitem(last=False)
        else:
            self._log.move_to_end(key)
        horizon = now - self.window
        while q and q[0] <= horizon:
            q.popleft()
        return q

    def over(self, key: str, limit: int, now: float) -> float:
        """0.0 when fewer than ``limit`` events are in the window, else seconds until one
        leaves it."""
        q = self._events(key, now, create=False)
        if q is None or len(q) < limit:
            return 0.0
        return max(q[-limit] + self.window - now, 0.001)

    def add(self, key: str, now: float) -> None:
        q = self._events(key, now, create=True)
        assert q is not None
        q.append(now)

    def prune(self, now: float) -> None:
        horizon = now - self.window
        for key in [k for k, q in self._log.items() if not q or q[-1] <= horizon]:
            del self._log[key]

    def __len__(self) -> int:
        return len(self._log)
