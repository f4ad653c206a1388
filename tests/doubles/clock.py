"""A clock a test advances by hand (:class:`metadata_relay.clock.Clock`'s interface):
timeouts fire when the test says so, without real waiting."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable

from metadata_relay.clock import Clock


class _Timer:
    __slots__ = ("callback", "cancelled")

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock(Clock):
    """Starts at the real wall-clock time (stored timestamps look real) and only moves in
    :meth:`advance`; monotonic time moves with it."""

    def __init__(self) -> None:
        self.now = time.time()
        self._timers: list[tuple[float, int, _Timer]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[[], None]) -> _Timer:
        timer = _Timer(callback)
        heapq.heappush(self._timers, (self.now + max(delay, 0.0), next(self._seq), timer))
        return timer

    async def sleep(self, seconds: float) -> None:
        done = asyncio.get_running_loop().create_future()
        self.call_later(seconds, lambda: done.done() or done.set_result(None))
        await done

    async def advance(self, seconds: float) -> None:
        """Move time forward, firing due timers in order, then let the tasks they woke run
        (closing handshakes, sweeps) on the real event loop."""
        end = self.now + seconds
        while self._timers and self._timers[0][0] <= end:
            due, _, timer = heapq.heappop(self._timers)
            self.now = max(self.now, due)
            if not timer.cancelled:
                timer.callback()
        self.now = end
        for _ in range(5):
            await asyncio.sleep(0.01)
