"""Outbound politeness per provider: a rate gate, a concurrency cap, ``Retry-After`` and a
circuit breaker. Pure asyncio coordination; the HTTP client lives in ``upstream.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Literal

FailureKind = Literal["timeout", "unavailable", "bad_status", "rate_limited", "busy",
                      "too_large"]


class UpstreamFailure(Exception):
    """The upstream could not give a usable answer. ``kind`` decides the relay's status."""

    def __init__(self, kind: FailureKind, message: str, *, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.retry_after = retry_after


class CircuitBreaker:
    """Opens after ``threshold`` consecutive failures; after a cool-down one probe is let
    through (half-open): success closes it, failure re-opens it with a doubled cool-down."""

    def __init__(self, threshold: int = 5, base_cooldown: float = 2.0, max_cooldown: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = threshold
        self.base_cooldown = base_cooldown
        self.max_cooldown = max_cooldown
        self.clock = clock
        self.failures = 0
        self.cooldown = base_cooldown
        self.open_until = 0.0
        self.probing = False

    @property
    def state(self) -> Literal["closed", "open", "half_open"]:
        if self.failures < self.threshold:
            return "closed"
        return "open" if self.clock() < self.open_until or self.probing else "half_open"

    def allow(self) -> bool:
        """May a request go upstream now? In half-open, only one probe at a time."""
        if self.failures < self.threshold:
            return True
        if self.clock() < self.open_until or self.probing:
            return False
        self.probing = True
        return True

    def success(self) -> None:
        self.failures = 0
        self.cooldown = self.base_cooldown
        self.probing = False

    def failure(self) -> None:
        was_probe = self.probing
        self.probing = False
        self.failures += 1
        if self.failures >= self.threshold:
            if was_probe:
                self.cooldown = min(self.cooldown * 2, self.max_cooldown)
            self.open_until = self.clock() + self.cooldown

    def release_probe(self) -> None:
        """A probe ended without a verdict (cancelled): let the next request probe."""
        self.probing = False


class Politeness:
    """At most ``rate`` request starts per second and ``concurrency`` requests in flight;
    callers wait in a queue for at most ``queue_timeout`` seconds, then get ``busy``.

    Requests are paced at ``headroom`` (95 %) of the cap: the time between leaving the gate
    and the bytes reaching upstream varies with event-loop load (P3 measured 208 starts in one
    second at a 200/s cap when paced at exactly 100 %), and the cap must hold at the upstream.
    A provider that refuses rather than throttles (MusicBrainz answers 503 past 1 request/s)
    gets more headroom."""

    HEADROOM = 0.95

    def __init__(self, rate: float, concurrency: int, queue_timeout: float,
                 breaker: CircuitBreaker | None = None, headroom: float = HEADROOM) -> None:
        self.interval = 1.0 / (rate * headroom)
        self.queue_timeout = queue_timeout
        self.semaphore = asyncio.Semaphore(concurrency)
        self.breaker = breaker or CircuitBreaker()
        self.next_slot = 0.0
        self.last_start = float("-inf")  # monotonic time the last request left the gate
        self.blocked_until = 0.0  # from an upstream Retry-After
        self.in_flight = 0
        self.peak_in_flight = 0

    def block_for(self, seconds: float) -> None:
        self.blocked_until = max(self.blocked_until, time.monotonic() + min(seconds, 3600.0))

    @asynccontextmanager
    async def slot(self, max_wait: float | None = None) -> AsyncIterator[None]:
        """Wait (at most ``queue_timeout``, or ``max_wait`` when shorter) for permission to
        send one request; raise UpstreamFailure when not allowed."""
        wait_budget = self.queue_timeout if max_wait is None else min(max_wait, self.queue_timeout)
        deadline = time.monotonic() + wait_budget
        now = time.monotonic()
        if self.blocked_until > now:
            wait = self.blocked_until - now
            if now + wait > deadline:
                raise UpstreamFailure("rate_limited", "upstream asked us to slow down",
                                      retry_after=wait)
            await asyncio.sleep(wait)
        if not self.breaker.allow():
            raise UpstreamFailure("unavailable", "upstream is failing; circuit open",
                                  retry_after=max(self.breaker.open_until - time.monotonic(), 1))
        probe = self.breaker.probing
        try:
            if self.next_slot > deadline:
                # the rate gate alone is booked past this request's wait: refuse at once
                raise UpstreamFailure("busy", "upstream request rate cap reached",
                                      retry_after=self.next_slot - time.monotonic())
            try:
                async with asyncio.timeout(max(deadline - time.monotonic(), 0.001)):
                    await self.semaphore.acquire()
            except TimeoutError:
                raise UpstreamFailure("busy", "too many requests queued for upstream",
                                      retry_after=1.0) from None
            try:
                now = time.monotonic()
                start = max(now, self.next_slot)
                if start > deadline:
                    raise UpstreamFailure("busy", "upstream request rate cap reached",
                                          retry_after=start - now)
                self.next_slot = start + self.interval
                # never before the slot (timers can fire up to 1 ms early on uvloop), nor
                # closer than one interval to the last real start (a late wake-up of the
                # request before this one must not shorten the gap)
                while True:
                    remaining = max(start, self.last_start + self.interval) - time.monotonic()
                    if remaining <= 0:
                        break
                    await asyncio.sleep(remaining)
                self.last_start = time.monotonic()
                self.next_slot = max(self.next_slot, self.last_start + self.interval)
                self.in_flight += 1
                self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
                try:
                    yield
                finally:
                    self.in_flight -= 1
            finally:
                self.semaphore.release()
        finally:
            if probe and self.breaker.probing:
                self.breaker.release_probe()
