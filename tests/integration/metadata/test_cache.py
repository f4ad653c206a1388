"""Cache behaviour end to end: hits without upstream calls, order-insensitive keys, headers,
conditional and gzip answers, survival across a restart of the real service process."""

from __future__ import annotations

import gzip
import json
import urllib.request

from tests.doubles.fake_upstream import FakeUpstream
from tests.relay_server import client, serve_relay
from tests.tools import running_service


async def test_second_call_is_a_hit_without_upstream_call(tmp_path, upstream: FakeUpstream):
    async with serve_relay(tmp_path, upstream.env()) as base, client() as http:
        async with http.get(base + "/tmdb/tv/shows/1399?language=en") as r:
            first = await r.read()
            assert r.headers["x-cache"] == "MISS"
        async with http.get(base + "/tmdb/tv/shows/1399?language=en") as r:
            assert await r.read() == first
            assert r.headers["x-cache"] == "HIT"
            assert int(r.headers["age"]) >= 0
            assert r.headers["cache-control"].startswith("public, max-age=")
            assert r.headers["etag"].startswith('"')
        assert upstream.count("/3/tv/1399") == 1


async def test_parameter_order_and_client_api_key_do_not_change_the_key(
    tmp_path, upstream: FakeUpstream
):
    async with serve_relay(tmp_path, upstream.env()) as base, client() as http:
        for q in ("query=lost&year=2004&page=1", "page=1&year=2004&query=lost",
                  "year=2004&api_key=zzz&query=lost&page=1"):
            async with http.get(base + "/tmdb/tv/search?" + q) as r:
                assert r.status == 200
        assert upstream.count("/3/search/tv") == 1
        async with http.get(base + "/tmdb/tv/search?query=lost&year=2005&page=1") as r:
            assert r.headers["x-cache"] == "MISS"
        assert upstream.count("/3/search/tv") == 2


async def test_ttl_policy_per_route(tmp_path, upstream: FakeUpstream):
    day = 86400
    expected = {
        "/tmdb/movies/603/images": 90 * day,
        "/tmdb/movies/trending": 3600,
        "/tmdb/movies/search?query=a": 7 * day,
        "/tvdb/search?query=a": 7 * day,
        "/tmdb/movies/603": 30 * day,
        "/tmdb/tv/shows/1399": 30 * day,
        "/tmdb/tv/shows/1399/1": 14 * day,
        "/tmdb/movies/popular": 30 * day,
        "/configuration": 30 * day,
        "/tvdb/series/1/extended": 30 * day,
    }
    async with serve_relay(tmp_path, upstream.env()) as base, client() as http:
        for path, ttl in expected.items():
            async with http.get(base + path) as r:
                assert r.status == 200, path
                max_age = int(r.headers["cache-control"].split("max-age=")[1])
                assert ttl * 0.9 - 2 <= max_age <= ttl * 1.1, (path, max_age, ttl)


async def test_etag_304_and_gzip(tmp_path, upstream: FakeUpstream):
    upstream.body_padding = 30_000
    async with serve_relay(tmp_path, upstream.env()) as base, client() as http:
        async with http.get(base + "/tmdb/tv/shows/7") as r:
            plain = await r.read()
            etag = r.headers["etag"]
            assert "content-encoding" not in r.headers
        async with http.get(base + "/tmdb/tv/shows/7", headers={"if-none-match": etag}) as r:
            assert r.status == 304
            assert await r.read() == b""
            assert r.headers["etag"] == etag
        async with http.get(base + "/tmdb/tv/shows/7",
                            headers={"if-none-match": '"other"'}) as r:
            assert r.status == 200
        async with http.get(base + "/tmdb/tv/shows/7",
                            headers={"accept-encoding": "br, gzip"}) as r:
            assert r.headers["content-encoding"] == "gzip"
            assert r.headers["vary"] == "accept-encoding"
            zipped = await r.read()
            assert len(zipped) < len(plain)
            assert gzip.decompress(zipped) == plain
        async with http.get(base + "/tmdb/tv/shows/7",
                            headers={"accept-encoding": "gzip;q=0"}) as r:
            assert "content-encoding" not in r.headers
        assert upstream.count("/3/tv/7") == 1


async def test_memory_tier_evicts_but_sqlite_tier_still_serves(tmp_path, upstream: FakeUpstream):
    upstream.body_padding = 2000
    env = {**upstream.env(), "CACHE_MEMORY_MAX_BYTES": "6000"}
    async with serve_relay(tmp_path, env) as base, client() as http:
        for i in range(1, 6):
            async with http.get(base + f"/tmdb/movies/{i}") as r:
                assert r.status == 200
        async with http.get(base + "/stats") as r:
            stats = (await r.json())["cache"]
            assert stats["memory_bytes"] <= 6000
            assert stats["size"] < 5
            assert stats["adapter"] == "memory+sqlite"
        for i in range(1, 6):
            async with http.get(base + f"/tmdb/movies/{i}") as r:
                assert r.headers["x-cache"] == "HIT"
        assert len(upstream.api_calls()) == 5


def test_cache_survives_restart_of_the_service(tmp_path, upstream: FakeUpstream):
    env = upstream.env()
    with running_service(tmp_path, env) as svc:
        with urllib.request.urlopen(svc.url + "/tmdb/movies/603?language=en") as r:
            first = r.read()
            assert r.headers["x-cache"] == "MISS"
    with running_service(tmp_path, env) as svc:
        with urllib.request.urlopen(svc.url + "/tmdb/movies/603?language=en") as r:
            assert r.read() == first
            assert r.headers["x-cache"] == "HIT"
        with urllib.request.urlopen(svc.url + "/stats") as r:
            stats = json.loads(r.read())
            assert stats["service"] == "metadata-relay"
            assert {"adapter", "size", "hits", "misses", "hit_rate_pct"} <= set(stats["cache"])
        with urllib.request.urlopen(svc.url + "/metrics") as r:
            text = r.read().decode()
            assert "relay_cache_requests_total" in text
            assert "relay_upstream_requests_total" in text
    assert upstream.count("/3/movie/603") == 1


async def test_request_headers_never_shape_the_cached_answer(tmp_path, upstream: FakeUpstream):
    """Cache poisoning: Host, X-Forwarded-* and rewrite headers are neither keyed nor sent
    upstream, so whoever fills an entry cannot make it differ for the next client."""
    hostile = {"host": "evil.example", "x-forwarded-host": "evil.example",
               "x-forwarded-proto": "gopher", "x-original-url": "/tmdb/movies/1",
               "x-rewrite-url": "/tmdb/movies/1", "x-http-method-override": "DELETE",
               "forwarded": "host=evil.example"}
    async with serve_relay(tmp_path, upstream.env()) as base, client() as http:
        async with http.get(base + "/tmdb/movies/5?language=en", headers=hostile) as r:
            poisoned = await r.read()
            assert r.status == 200 and r.headers["x-cache"] == "MISS"
        async with http.get(base + "/tmdb/movies/5?language=en") as r:
            assert r.headers["x-cache"] == "HIT" and await r.read() == poisoned
    (call,) = upstream.api_calls()
    assert call.path == "/3/movie/5"
    assert call.headers["Host"] == f"127.0.0.1:{upstream.port}"
    assert not {k.lower() for k in call.headers} & set(hostile) - {"host"}
