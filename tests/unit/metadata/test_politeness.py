from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from metadata_relay.metadata.politeness import CircuitBreaker, Politeness, UpstreamFailure


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_breaker_opens_probes_and_backs_off() -> None:
    clock = Clock()
    b = CircuitBreaker(threshold=3, base_cooldown=2, max_cooldown=5, clock=clock)
    for _ in range(3):
        assert b.allow()
        b.failure()
    assert b.state == "open" and not b.allow()
    clock.t += 2.1
    assert b.allow()  # the one probe
    assert not b.allow()  # only one at a time
    b.failure()
    assert b.cooldown == 4 and not b.allow()
    clock.t += 4.1
    assert b.allow()
    b.failure()
    assert b.cooldown == 5  # capped
    clock.t += 5.1
    assert b.allow()
    b.success()
    assert b.state == "closed" and b.allow() and b.allow()


async def test_concurrency_cap_and_rate_spacing() -> None:
    p = Politeness(rate=50, concurrency=2, queue_timeout=5)
    starts: list[float] = []
    peak = 0
    active = 0

    async def one() -> None:
        nonlocal peak, active
        async with p.slot():
            starts.append(time.monotonic())
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0.01)
            active -= 1

    await asyncio.gather(*(one() for _ in range(10)))
    assert peak <= 2
    # slots are 1/rate apart; a start can be late (scheduling) but never early, and the
    # first starts at once, so ten starts span at least nine intervals
    assert starts[-1] - starts[0] >= 9 * 0.02 - 0.005


async def test_queue_wait_is_bounded() -> None:
    p = Politeness(rate=1000, concurrency=1, queue_timeout=0.05)
    release = asyncio.Event()

    async def holder() -> None:
        async with p.slot():
            await release.wait()

    task = asyncio.create_task(holder())
    await asyncio.sleep(0.01)
    with pytest.raises(UpstreamFailure) as err:
        async with p.slot():
            pass
    assert err.value.kind == "busy"
    release.set()
    await task


async def test_retry_after_blocks_beyond_queue_budget() -> None:
    p = Politeness(rate=1000, concurrency=4, queue_timeout=0.05)
    p.block_for(30)
    with pytest.raises(UpstreamFailure) as err:
        async with p.slot():
            pass
    assert err.value.kind == "rate_limited" and err.value.retry_after is not None
    assert 29 < err.value.retry_after <= 30


async def test_every_gap_between_starts_is_at_least_one_interval() -> None:
    """Not just the span: a request woken late must not bring the next one closer."""
    p = Politeness(rate=20, concurrency=8, queue_timeout=5, headroom=0.9)
    starts: list[float] = []

    async def one() -> None:
        async with p.slot():
            starts.append(time.monotonic())
            time.sleep(0.01)  # hold the event loop: the next wake-up is late

    await asyncio.gather(*(one() for _ in range(6)))
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= p.interval


async def test_a_rate_gate_booked_past_the_wait_refuses_at_once() -> None:
    p = Politeness(rate=1, concurrency=16, queue_timeout=30)
    async with p.slot():
        pass
    started = time.monotonic()
    with pytest.raises(UpstreamFailure) as err:
        async with p.slot(max_wait=0.5):  # the next slot is ~1 s away
            pass
    assert err.value.kind == "busy" and time.monotonic() - started < 0.1
