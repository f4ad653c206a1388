"""Every proxy route against the fake upstream: upstream path, parameters, key injection,
status mapping, TVDB token handling."""

from __future__ import annotations

import json

import pytest

from tests.doubles.clock import ManualClock
from tests.doubles.fake_upstream import NOT_FOUND_ID, FakeUpstream
from tests.relay_server import client, serve_relay

TMDB_ROUTES = [
    ("/configuration", "/3/configuration"),
    ("/tmdb/movies/search?query=matrix&year=1999", "/3/search/movie"),
    ("/tmdb/tv/search?query=lost", "/3/search/tv"),
    ("/tmdb/movies/trending?language=en", "/3/trending/movie/week"),
    ("/tmdb/tv/trending", "/3/trending/tv/week"),
    ("/tmdb/movies/popular", "/3/movie/popular"),
    ("/tmdb/movies/upcoming", "/3/movie/upcoming"),
    ("/tmdb/movies/now_playing", "/3/movie/now_playing"),
    ("/tmdb/tv/popular", "/3/tv/popular"),
    ("/tmdb/tv/on_the_air", "/3/tv/on_the_air"),
    ("/tmdb/tv/airing_today", "/3/tv/airing_today"),
    ("/tmdb/list/42", "/3/list/42"),
    ("/tmdb/movies/603?append_to_response=credits,videos", "/3/movie/603"),
    ("/tmdb/tv/shows/1399", "/3/tv/1399"),
    ("/tmdb/movies/603/images?include_image_language=en,null", "/3/movie/603/images"),
    ("/tmdb/tv/shows/1399/images", "/3/tv/1399/images"),
    ("/tmdb/tv/shows/1399/2?language=de", "/3/tv/1399/season/2"),
]

TVDB_ROUTES = [
    ("/tvdb/search?query=lost&type=series", "/v4/search", {"query": "lost", "type": "series"}),
    ("/tvdb/series/81189?meta=x", "/v4/series/81189", {}),
    ("/tvdb/series/81189/extended?meta=translations&short=true",
     "/v4/series/81189/extended", {"meta": "translations", "short": "true"}),
    ("/tvdb/series/81189/episodes?page=3&lang=x", "/v4/series/81189/episodes/default",
     {"page": "3"}),
    ("/tvdb/series/81189/episodes", "/v4/series/81189/episodes/default", {"page": "0"}),
    ("/tvdb/seasons/7", "/v4/seasons/7", {}),
    ("/tvdb/seasons/7/extended", "/v4/seasons/7/extended", {}),
    ("/tvdb/episodes/9", "/v4/episodes/9", {}),
    ("/tvdb/episodes/9/extended?meta=translations", "/v4/episodes/9/extended",
     {"meta": "translations"}),
    ("/tvdb/artwork/11", "/v4/artwork/11", {}),
]


async def test_every_tmdb_route_maps_path_params_and_key(tmp_path, upstream: FakeUpstream):
    async with serve_relay(tmp_path, upstream.env()) as base, client() as http:
        for relay_path, upstream_path in TMDB_ROUTES:
            upstream.calls.clear()
            url = relay_path + ("&" if "?" in relay_path else "?") + "api_key=client-forged"
            async with http.get(base + url) as r:
                body = await r.read()
                assert r.status == 200, (relay_path, body)
                assert r.headers["x-cache"] == "MISS"
            calls = upstream.api_calls()
            assert [c.path for c in calls] == [upstream_path], relay_path
            sent = calls[0].params
            assert sent.pop("api_key") == upstream.tmdb_key  # ours, never the client's
            expected = dict(p.split("=", 1) for p in relay_path.partition("?")[2].split("&") if p)
            assert sent == expected, relay_path
            # byte for byte: the fake's odd formatting survives
            assert body == upstream._payload(upstream_path, expected)


async def test_every_tvdb_route_with_bearer_token(tmp_path, upstream: FakeUpstream):
    async with serve_relay(tmp_path, upstream.env()) as base, client() as http:
        for relay_path, upstream_path, params in TVDB_ROUTES:
            upstream.calls.clear()
            async with http.get(base + relay_path) as r:
                body = await r.read()
                assert r.status == 200, (relay_path, body)
            calls = upstream.api_calls()
            assert [c.path for c in calls] == [upstream_path], relay_path
            assert calls[0].params == params, relay_path
            assert calls[0].headers["Authorization"].startswith("Bearer ")
            assert json.loads(body)["data"]["path"] == upstream_path
        assert upstream.logins == 1  # one login serves every call
        assert upstream.login_bodies == [{"apikey": upstream.tvdb_key, "pin": upstream.tvdb_pin}]


async def test_literal_segments_win_and_ids_must_be_digits(tmp_path, upstream: FakeUpstream):
    async with serve_relay(tmp_path, upstream.env()) as base, client() as http:
        for path in ("/tmdb/movies/abc", "/tmdb/tv/shows/12x", "/tmdb/tv/shows/1/x",
                     "/tvdb/series/-1", "/tmdb/movies/1/videos", "/tmdb/nothing",
                     "/tmdb/movies/603/images/extra", "/tvdb/series/1%2F2"):
            async with http.get(base + path) as r:
                assert r.status == 404, path
                assert (await r.json())["error"] == "not_found"
        assert upstream.api_calls() == []
        async with http.get(base + "/tmdb/movies/trending") as r:
            assert r.status == 200
        assert [c.path for c in upstream.api_calls()] == ["/3/trending/movie/week"]


async def test_not_configured_is_503_without_upstream_call(tmp_path, upstream: FakeUpstream):
    env = {"TMDB_BASE_URL": upstream.tmdb_url, "TVDB_BASE_URL": upstream.tvdb_url}
    async with serve_relay(tmp_path, env) as base, client() as http:
        for path in ("/tmdb/movies/603", "/tvdb/series/1", "/configuration"):
            async with http.get(base + path) as r:
                assert r.status == 503
                assert (await r.json())["error"] == "not_configured"
    assert upstream.calls == []


async def test_4xx_passed_through_and_404_cached_briefly(tmp_path, upstream: FakeUpstream):
    async with serve_relay(tmp_path, upstream.env()) as base, client() as http:
        async with http.get(base + "/tmdb/movies/popular?page=-1") as r:
            assert r.status == 422
            assert (await r.json())["status_code"] == 22
        async with http.get(base + "/tmdb/movies/popular?page=-1") as r:
            assert r.status == 422
        assert upstream.count("/3/movie/popular") == 2  # 4xx other than 404: never cached
        for _ in range(2):
            async with http.get(base + f"/tmdb/movies/{NOT_FOUND_ID}") as r:
                assert r.status == 404
                assert (await r.json())["status_code"] == 34
                max_age = int(r.headers["cache-control"].split("max-age=")[1])
                assert 0 < max_age <= 600 * 1.1
        assert upstream.count(f"/3/movie/{NOT_FOUND_ID}") == 1


async def test_bad_tmdb_key_passes_upstream_401(tmp_path, upstream: FakeUpstream):
    env = {**upstream.env(), "TMDB_API_KEY": "wrong"}
    async with serve_relay(tmp_path, env) as base, client() as http:
        async with http.get(base + "/tmdb/movies/603") as r:
            assert r.status == 401
            assert (await r.json())["status_code"] == 7


@pytest.mark.parametrize("status", [500, 502, 503, 429])
async def test_upstream_errors_map_to_502_envelope(tmp_path, upstream: FakeUpstream, status):
    upstream.fail_status = status
    upstream.fail_retry_after = "7" if status == 429 else None
    env = {**upstream.env(), "UPSTREAM_QUEUE_TIMEOUT": "0.5"}
    async with serve_relay(tmp_path, env) as base, client() as http:
        async with http.get(base + "/tmdb/movies/603") as r:
            assert r.status == 502
            body = await r.json()
            assert body["error"] == "upstream_error"
            assert body["message"]
            assert r.headers["cache-control"] == "no-store"
            if status == 429:
                assert r.headers["retry-after"] == "7"
        upstream.fail_status = None
        # nothing was cached: the next call goes upstream and succeeds
        async with http.get(base + "/tmdb/movies/603") as r:
            assert r.status in (200, 502)  # 429 blocks the provider for Retry-After seconds
            if status != 429:
                assert r.status == 200 and r.headers["x-cache"] == "MISS"


async def test_timeout_is_504_and_refused_connection_is_502(tmp_path, upstream: FakeUpstream):
    upstream.hang = True
    env = {**upstream.env(), "UPSTREAM_TIMEOUT": "0.5"}
    async with serve_relay(tmp_path, env) as base, client() as http:
        async with http.get(base + "/tmdb/movies/1") as r:
            assert r.status == 504
            assert (await r.json())["error"] == "upstream_timeout"
    port = upstream.port
    upstream.stop()
    env = {"TMDB_API_KEY": "k", "TMDB_BASE_URL": f"http://127.0.0.1:{port}/3"}
    async with serve_relay(tmp_path / "b", env) as base, client() as http:
        async with http.get(base + "/tmdb/movies/1") as r:
            assert r.status == 502
            assert (await r.json())["error"] == "upstream_unavailable"


async def test_tvdb_refreshes_once_on_401_then_gives_up(tmp_path, upstream: FakeUpstream):
    async with serve_relay(tmp_path, upstream.env()) as base, client() as http:
        async with http.get(base + "/tvdb/series/1") as r:
            assert r.status == 200
        assert upstream.logins == 1
        upstream.expire_tvdb_tokens()
        async with http.get(base + "/tvdb/series/2") as r:
            assert r.status == 200  # 401 → one login → one retry
        assert upstream.logins == 2
        assert upstream.count("/v4/series/2") == 2
        # a key TVDB stops accepting: one refresh attempt, then 401, no loop
        upstream.tvdb_key = "revoked"
        upstream.expire_tvdb_tokens()
        async with http.get(base + "/tvdb/series/3") as r:
            assert r.status == 401
            assert (await r.json())["error"] == "upstream_auth_failed"
        assert upstream.logins == 3
        assert upstream.count("/v4/series/3") == 1


async def test_bad_tvdb_key_never_stops_startup(tmp_path, upstream: FakeUpstream):
    env = {**upstream.env(), "TVDB_API_KEY": "bad"}
    async with serve_relay(tmp_path, env) as base, client() as http:
        assert upstream.logins == 0  # lazy
        async with http.get(base + "/health") as r:
            assert r.status == 200
        async with http.get(base + "/tvdb/series/1") as r:
            assert r.status == 401
            assert (await r.json())["error"] == "upstream_auth_failed"
        async with http.get(base + "/tmdb/movies/1") as r:
            assert r.status == 200  # the other provider is unaffected


async def test_head_behaves_as_get_without_body(tmp_path, upstream: FakeUpstream):
    async with serve_relay(tmp_path, upstream.env()) as base, client() as http:
        async with http.head(base + "/tmdb/movies/5") as r:
            assert r.status == 200
            assert await r.read() == b""
            length = int(r.headers["content-length"])
        async with http.get(base + "/tmdb/movies/5") as r:
            assert r.headers["x-cache"] == "HIT"
            assert len(await r.read()) == length
        async with http.post(base + "/tmdb/movies/5") as r:
            assert r.status == 405
        assert upstream.count("/3/movie/5") == 1


async def test_request_id_echoed_and_cors(tmp_path, upstream: FakeUpstream):
    async with serve_relay(tmp_path, upstream.env()) as base, client() as http:
        async with http.get(base + "/tmdb/movies/5", headers={"x-request-id": "abc-123"}) as r:
            assert r.headers["x-request-id"] == "abc-123"
            assert r.headers["access-control-allow-origin"] == "*"
        async with http.get(base + "/health", headers={"x-request-id": "h-1"}) as r:
            assert r.headers["x-request-id"] == "h-1"
        async with http.options(base + "/tmdb/movies/5", headers={
            "origin": "https://app.example", "access-control-request-method": "GET",
        }) as r:
            assert r.status == 204
            assert "GET" in r.headers["access-control-allow-methods"]
            assert "authorization" in r.headers["access-control-allow-headers"]


async def test_tvdb_token_refreshed_ahead_of_expiry(tmp_path, upstream: FakeUpstream):
    upstream.token_lifetime = 3600  # refresh once less than 10 % of it remains
    clock = ManualClock()
    async with serve_relay(tmp_path, upstream.env(), clock=clock) as base, client() as http:
        async with http.get(base + "/tvdb/series/1") as r:
            assert r.status == 200
        assert upstream.logins == 1
        await clock.advance(3000)
        async with http.get(base + "/tvdb/series/3") as r:
            assert r.status == 200
        assert upstream.logins == 1  # 600 s of 3,600 left: not yet
        await clock.advance(300)
        async with http.get(base + "/tvdb/series/2") as r:
            assert r.status == 200
        assert upstream.logins == 2
        assert upstream.count("/v4/series/2") == 1  # refreshed before, not after, a 401


async def test_failed_tvdb_login_backs_off(tmp_path, upstream: FakeUpstream):
    env = {**upstream.env(), "TVDB_API_KEY": "bad"}
    async with serve_relay(tmp_path, env) as base, client() as http:
        for i in range(5):
            async with http.get(base + f"/tvdb/series/{i + 1}") as r:
                assert r.status == 401
        assert upstream.logins == 1  # retried only after the backoff, not per request


async def test_generated_request_ids_are_unique(tmp_path, upstream: FakeUpstream):
    async with serve_relay(tmp_path, upstream.env()) as base, client() as http:
        ids = set()
        for _ in range(3):
            for path in ("/tmdb/movies/5", "/health", "/tmdb/movies/x"):
                async with http.get(base + path) as r:
                    ids.add(r.headers["x-request-id"])
        assert len(ids) == 9
