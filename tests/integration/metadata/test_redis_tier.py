"""The Redis cache tier against a real redis-server: shared by replicas; Redis down keeps
the relay serving from memory, reports degraded, and reconnects."""

from __future__ import annotations

import asyncio

from tests.doubles.fake_upstream import FakeUpstream
from tests.redis_server import redis_server
from tests.relay_server import client, serve_relay


async def health(http, base: str) -> dict:
    async with http.get(base + "/health") as r:
        return await r.json()


async def test_replicas_share_the_redis_tier(tmp_path, upstream: FakeUpstream):
    with redis_server(tmp_path) as redis:
        env = {**upstream.env(), "REDIS_URL": redis.url}
        async with serve_relay(tmp_path / "a", env) as a, serve_relay(tmp_path / "b", env) as b, \
                client() as http:
            async with http.get(a + "/tmdb/movies/603") as r:
                body = await r.read()
                assert r.headers["x-cache"] == "MISS"
            async with http.get(b + "/tmdb/movies/603") as r:
                assert r.headers["x-cache"] == "HIT"  # from Redis: B never asked upstream
                assert await r.read() == body
            async with http.get(b + "/stats") as r:
                assert (await r.json())["cache"]["adapter"] == "memory+redis"
            assert (await health(http, a))["status"] == "ok"
    assert upstream.count("/3/movie/603") == 1


async def test_redis_down_degrades_and_recovers(tmp_path, upstream: FakeUpstream):
    with redis_server(tmp_path) as redis:
        env = {**upstream.env(), "REDIS_URL": redis.url}
        async with serve_relay(tmp_path / "a", env) as base, client() as http:
            async with http.get(base + "/tmdb/movies/1") as r:
                assert r.status == 200
            redis.stop()
            for _ in range(60):
                if (await health(http, base)).get("redis") == "degraded":
                    break
                await asyncio.sleep(0.1)
            body = await health(http, base)
            assert body["status"] == "degraded" and body["redis"] == "degraded"
            async with http.get(base + "/tmdb/movies/1") as r:
                assert r.status == 200 and r.headers["x-cache"] == "HIT"  # memory tier
            async with http.get(base + "/tmdb/movies/2") as r:
                assert r.status == 200  # misses still work, Redis skipped
            redis.start()
            for _ in range(60):
                if (await health(http, base))["status"] == "ok":
                    break
                await asyncio.sleep(0.1)
            assert (await health(http, base))["status"] == "ok"
            async with http.get(base + "/tmdb/movies/3") as r:
                assert r.status == 200
        # the entry written after recovery is really in Redis
        async with serve_relay(tmp_path / "b", env) as other, client() as http:
            async with http.get(other + "/tmdb/movies/3") as r:
                assert r.headers["x-cache"] == "HIT"


async def test_unreachable_redis_at_start_does_not_stop_the_service(tmp_path, upstream):
    env = {**upstream.env(), "REDIS_URL": "redis://127.0.0.1:1/0"}
    async with serve_relay(tmp_path, env) as base, client() as http:
        assert (await health(http, base))["status"] == "degraded"
        async with http.get(base + "/tmdb/movies/1") as r:
            assert r.status == 200
