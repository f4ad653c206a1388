"""The service's time: wall clock (claim expiry, tokens, credential expiry), monotonic
clock (rate limits, liveness) and timers (socket deadlines, the clean-up sweep).

Production reads the system and the event loop; tests inject a clock they advance by hand,
so nothing waits for a real timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock:
    """System time and the running event loop's timers."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return asyncio.get_running_loop().call_later(delay, callback)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
