"""Outages and stampedes: single flight, stale-while-revalidate, stale-if-error, politeness
caps, Retry-After and the circuit breaker, all against the fake upstream."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import aiohttp

from tests.doubles.clock import ManualClock
from tests.doubles.fake_upstream import FakeUpstream
from tests.relay_server import client, serve_relay


def age_entries(db: Path, seconds_past_expiry: float) -> int:
    """Make every cached entry expired by ``seconds_past_expiry`` (simulates time passing)."""
    now = time.time()
    with sqlite3.connect(db) as conn:
        n = conn.execute(
            "UPDATE cache_entries SET expires_at = ?, purge_at = ? + 30 * 86400",
            (now - seconds_past_expiry, now - seconds_past_expiry),
        ).rowcount
    return n


async def warm(tmp_path: Path, upstream: FakeUpstream, paths: list[str]) -> dict[str, bytes]:
    bodies = {}
    async with serve_relay(tmp_path, upstream.env()) as base, client() as http:
        for p in paths:
            async with http.get(base + p) as r:
                assert r.status == 200
                bodies[p] = await r.read()
    return bodies


async def test_concurrent_misses_make_one_upstream_call(tmp_path, upstream: FakeUpstream):
    upstream.delay = 0.3
    async with serve_relay(tmp_path, upstream.env()) as base, client() as http:

        async def one() -> tuple[int, bytes, str]:
            async with http.get(base + "/tmdb/tv/shows/1399?language=en") as r:
                return r.status, await r.read(), r.headers["x-cache"]

        results = await asyncio.gather(*(one() for _ in range(60)))
    assert upstream.count("/3/tv/1399") == 1
    assert {s for s, _, _ in results} == {200}
    assert len({b for _, b, _ in results}) == 1


async def test_client_leaving_does_not_cancel_the_shared_fetch(tmp_path, upstream: FakeUpstream):
    upstream.delay = 0.5
    async with serve_relay(tmp_path, upstream.env()) as base, client() as http:
        impatient = asyncio.create_task(http.get(base + "/tmdb/movies/77"))
        await asyncio.sleep(0.1)
        impatient.cancel()
        async with http.get(base + "/tmdb/movies/77") as r:
            assert r.status == 200
        async with http.get(base + "/tmdb/movies/77") as r:
            assert r.headers["x-cache"] == "HIT"
    assert upstream.count("/3/movie/77") == 1


async def test_stale_while_revalidate_serves_old_and_refreshes_once(
    tmp_path, upstream: FakeUpstream
):
    old = await warm(tmp_path, upstream, ["/tmdb/movies/603"])
    assert age_entries(tmp_path / "relay.db", 60) == 1
    upstream.body_padding = 10  # the refreshed answer differs
    upstream.delay = 0.3
    async with serve_relay(tmp_path, upstream.env()) as base, client() as http:

        async def one() -> tuple[str, bytes]:
            async with http.get(base + "/tmdb/movies/603") as r:
                assert r.status == 200
                return r.headers["x-cache"], await r.read()

        first = await asyncio.gather(*(one() for _ in range(10)))
        assert all(c == "STALE" and b == old["/tmdb/movies/603"] for c, b in first)
        for _ in range(50):
            if upstream.count("/3/movie/603") == 2 and not upstream.in_flight:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.1)
        cache, body = await one()
        assert cache == "HIT" and b"overview" in body
    assert upstream.count("/3/movie/603") == 2  # warm-up + exactly one refresh


async def test_stale_if_error_on_5xx_timeout_and_refused(tmp_path, upstream: FakeUpstream):
    paths = ["/tmdb/movies/1", "/tvdb/series/2", "/tmdb/tv/shows/3/1"]
    old = await warm(tmp_path, upstream, paths)
    age_entries(tmp_path / "relay.db", 3 * 86400)  # past the revalidate window
    upstream.fail_status = 503
    async with serve_relay(tmp_path, upstream.env()) as base, client() as http:
        for p in paths:
            async with http.get(base + p) as r:
                assert r.status == 200 and r.headers["x-cache"] == "STALE"
                assert await r.read() == old[p]
        async with http.get(base + "/tmdb/movies/999") as r:  # cold key: clear error
            assert r.status == 502
    upstream.fail_status = None
    upstream.hang = True
    env = {**upstream.env(), "UPSTREAM_TIMEOUT": "0.3"}
    async with serve_relay(tmp_path, env) as base, client() as http:
        async with http.get(base + paths[0]) as r:
            assert r.status == 200 and r.headers["x-cache"] == "STALE"
        async with http.get(base + "/tmdb/movies/998") as r:
            assert r.status == 504
    env = {**upstream.env()}
    upstream.stop()  # connection refused from now on
    async with serve_relay(tmp_path, env) as base, client() as http:
        async with http.get(base + paths[0]) as r:
            assert r.status == 200 and r.headers["x-cache"] == "STALE"


async def test_entries_older_than_stale_window_are_not_served(tmp_path, upstream: FakeUpstream):
    await warm(tmp_path, upstream, ["/tmdb/movies/1"])
    age_entries(tmp_path / "relay.db", 31 * 86400)
    upstream.fail_status = 500
    async with serve_relay(tmp_path, upstream.env()) as base, client() as http:
        async with http.get(base + "/tmdb/movies/1") as r:
            assert r.status == 502


async def test_upstream_concurrency_cap(tmp_path, upstream: FakeUpstream):
    upstream.delay = 0.2
    env = {**upstream.env(), "UPSTREAM_MAX_CONNECTIONS": "3", "UPSTREAM_MAX_RPS": "1000"}
    async with serve_relay(tmp_path, env) as base, client() as http:

        async def one(i: int) -> int:
            async with http.get(base + f"/tmdb/movies/{i}") as r:
                return r.status

        statuses = await asyncio.gather(*(one(i) for i in range(1, 16)))
    assert statuses == [200] * 15
    assert upstream.peak_in_flight <= 3
    assert upstream.peak_in_flight == 3  # the cap was reached, so the test is meaningful


async def test_upstream_rate_cap(tmp_path, upstream: FakeUpstream):
    env = {**upstream.env(), "UPSTREAM_MAX_RPS": "20"}
    async with serve_relay(tmp_path, env) as base, client() as http:

        async def one(i: int) -> int:
            async with http.get(base + f"/tmdb/movies/{i}") as r:
                return r.status

        statuses = await asyncio.gather(*(one(i) for i in range(1, 31)))
    assert statuses == [200] * 30
    starts = sorted(c.at for c in upstream.api_calls())
    worst = max(sum(1 for t in starts if s <= t < s + 1.0) for s in starts)
    # 20/s: without the gate all 30 would arrive within a few ms. Slots are 50 ms apart;
    # allow 2 for the window's ends and network jitter moving a start into the next window.
    assert worst <= 22
    assert starts[-1] - starts[0] >= 29 * 0.05 - 0.05


async def test_queue_wait_is_bounded_with_503(tmp_path, upstream: FakeUpstream):
    upstream.delay = 1.5
    env = {**upstream.env(), "UPSTREAM_MAX_CONNECTIONS": "1", "UPSTREAM_QUEUE_TIMEOUT": "0.3"}
    async with serve_relay(tmp_path, env) as base, client() as http:
        slow = asyncio.create_task(http.get(base + "/tmdb/movies/1"))
        await asyncio.sleep(0.1)
        async with http.get(base + "/tmdb/movies/2") as r:
            assert r.status == 503
            assert (await r.json())["error"] == "upstream_busy"
            assert int(r.headers["retry-after"]) >= 1
        resp = await slow
        assert resp.status == 200
        resp.release()
    assert upstream.count("/3/movie/2") == 0


async def test_retry_after_blocks_the_provider(tmp_path, upstream: FakeUpstream):
    upstream.fail_status = 429
    upstream.fail_retry_after = "30"
    env = {**upstream.env(), "UPSTREAM_QUEUE_TIMEOUT": "0.5"}
    async with serve_relay(tmp_path, env) as base, client() as http:
        async with http.get(base + "/tmdb/movies/1") as r:
            assert r.status == 502 and r.headers["retry-after"] == "30"
        upstream.fail_status = None
        async with http.get(base + "/tmdb/movies/2") as r:
            assert r.status == 502
            assert (await r.json())["error"] == "upstream_rate_limited"
            assert 25 <= int(r.headers["retry-after"]) <= 30
        async with http.get(base + "/tvdb/series/2") as r:
            assert r.status == 200  # only that provider is blocked
    assert upstream.count("/3/movie/2") == 0


async def test_circuit_breaker_stops_hammering_then_probes(tmp_path, upstream: FakeUpstream):
    upstream.fail_status = 500
    clock = ManualClock()
    async with serve_relay(tmp_path, upstream.env(), clock=clock) as base, client() as http:
        for i in range(1, 6):
            async with http.get(base + f"/tmdb/movies/{i}") as r:
                assert r.status == 502
        assert len(upstream.api_calls()) == 5
        for i in range(6, 16):
            async with http.get(base + f"/tmdb/movies/{i}") as r:
                assert r.status == 502
                assert (await r.json())["error"] == "upstream_unavailable"
        assert len(upstream.api_calls()) == 5  # open: nothing sent
        async with http.get(base + "/stats") as r:
            assert (await r.json())["cache"]["upstream"]["tmdb"]["circuit"] != "closed"
        upstream.fail_status = None
        await clock.advance(1.9)  # within the first cool-down (2 s): still open
        async with http.get(base + "/tmdb/movies/19") as r:
            assert (await r.json())["error"] == "upstream_unavailable"
        assert len(upstream.api_calls()) == 5
        await clock.advance(0.2)
        async with http.get(base + "/tmdb/movies/20") as r:
            assert r.status == 200  # the probe succeeds and closes the circuit
        async with http.get(base + "/tmdb/movies/21") as r:
            assert r.status == 200


async def test_queue_wait_counts_against_the_upstream_timeout(tmp_path, upstream: FakeUpstream):
    upstream.hang = True
    env = {**upstream.env(), "UPSTREAM_MAX_CONNECTIONS": "1", "UPSTREAM_TIMEOUT": "0.6",
           "UPSTREAM_QUEUE_TIMEOUT": "30"}
    async with serve_relay(tmp_path, env) as base, client() as http:
        first = asyncio.create_task(http.get(base + "/tmdb/movies/1"))
        await asyncio.sleep(0.1)
        # queued behind a hanging request: answered within UPSTREAM_TIMEOUT, not after 30 s
        async with http.get(base + "/tmdb/movies/2",
                            timeout=aiohttp.ClientTimeout(total=5)) as r:
            # busy (no slot in its budget) or timeout (got a slot with what was left)
            assert (r.status, (await r.json())["error"]) in (
                (503, "upstream_busy"), (504, "upstream_timeout"))
        resp = await first
        assert resp.status == 504
        resp.release()


async def test_no_background_refresh_while_the_circuit_is_open(tmp_path, upstream: FakeUpstream):
    paths = [f"/tmdb/movies/{i}" for i in range(100, 106)]
    await warm(tmp_path, upstream, paths)
    age_entries(tmp_path / "relay.db", 60)  # inside the revalidate window
    upstream.fail_status = 500
    async with serve_relay(tmp_path, upstream.env()) as base, client() as http:
        for i in range(1, 6):  # five failing cold misses open the circuit
            async with http.get(base + f"/tmdb/movies/{i}") as r:
                assert r.status == 502
        calls = len(upstream.api_calls())
        for p in paths:
            async with http.get(base + p) as r:
                assert r.status == 200 and r.headers["x-cache"] == "STALE"
        await asyncio.sleep(0.2)
        assert len(upstream.api_calls()) == calls  # stale served, upstream left alone


async def test_overload_never_opens_the_breaker(tmp_path, upstream: FakeUpstream):
    """Issue 12: 400 concurrent cold keys against an upstream that takes 0.5 s. Requests that
    cannot get a slot with enough time left are refused at once (503 upstream_busy, no call);
    every call the relay starts has time to finish, so the breaker stays closed and the next
    request is answered from the upstream."""
    upstream.delay = 0.5
    env = {**upstream.env(), "UPSTREAM_TIMEOUT": "2"}  # keeps the test short; same shape
    async with serve_relay(tmp_path, env) as base, aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0)) as http:

        async def one(i: int) -> tuple[int, str]:
            async with http.get(f"{base}/tmdb/movies/{10_000 + i}") as r:
                return r.status, (await r.json()).get("error", "")

        answers = await asyncio.gather(*(one(i) for i in range(400)))
        async with http.get(f"{base}/stats") as r:
            assert (await r.json())["cache"]["upstream"]["tmdb"]["circuit"] == "closed"
        async with http.get(f"{base}/tmdb/movies/1") as r:
            assert r.status == 200 and r.headers["x-cache"] == "MISS"
    served = sum(1 for s, _ in answers if s == 200)
    assert served >= 16  # at least a round of 16 connections
    assert {a for a in answers if a[0] != 200} <= {(503, "upstream_busy")}
    assert len(upstream.api_calls("/3/movie/1")) == served + 1  # no call was cut short


async def test_a_hanging_upstream_still_opens_the_breaker(tmp_path, upstream: FakeUpstream):
    upstream.hang = True
    env = {**upstream.env(), "UPSTREAM_TIMEOUT": "0.4", "UPSTREAM_MAX_RPS": "1000"}
    async with serve_relay(tmp_path, env) as base, client() as http:
        statuses = await asyncio.gather(*(http.get(f"{base}/tmdb/movies/{i}")
                                          for i in range(1, 6)))
        assert [r.status for r in statuses] == [504] * 5  # each had the whole timeout
        for r in statuses:
            r.release()
        async with http.get(f"{base}/tmdb/movies/9") as r:
            assert r.status == 502 and (await r.json())["error"] == "upstream_unavailable"
    assert len(upstream.api_calls()) == 5


async def test_large_bodies_arrive_whole_and_oversized_ones_are_refused(
        tmp_path, upstream: FakeUpstream):
    upstream.body_padding = 3 * 1024 * 1024  # many reads on the relay's side
    async with serve_relay(tmp_path, upstream.env()) as base, client() as http:
        async with http.get(f"{base}/tmdb/movies/5") as r:
            body = await r.read()
        assert body == upstream._payload("/3/movie/5", {})
    env = {**upstream.env(), "CACHE_ENTRY_MAX_BYTES": str(1024 * 1024)}
    async with serve_relay(tmp_path / "capped", env) as base, client() as http:
        async with http.get(f"{base}/tmdb/movies/6") as r:
            assert r.status == 502 and (await r.json())["error"] == "upstream_too_large"
        async with http.get(f"{base}/stats") as r:
            assert (await r.json())["cache"]["upstream"]["tmdb"]["circuit"] == "closed"
