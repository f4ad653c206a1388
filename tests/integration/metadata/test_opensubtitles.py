"""OpenSubtitles through the relay against a fake that behaves like the real API: the search
body's mapping, canonical form and cache, download URLs and their quota, login and its
refresh, 429 + Retry-After, not-configured answers and refused bodies."""

from __future__ import annotations

import asyncio
import json

import aiohttp
from multidict import CIMultiDict

from tests.doubles.fake_opensubtitles import OS_KEY, RESET_UTC
from tests.relay_server import client, serve_relay, streamed_json

SEARCH = "/api/v1/subtitles/search"
DOWNLOAD = "/api/v1/subtitles/download-url"


async def post(http: aiohttp.ClientSession, url: str, doc: object
               ) -> tuple[int, dict, CIMultiDict[str]]:
    async with http.post(url, data=json.dumps(doc),
                         headers={"content-type": "application/json"}) as r:
        return r.status, await r.json(), CIMultiDict(r.headers)


async def test_search_maps_the_body_and_answers_as_mydia_reads(tmp_path, subtitles):
    async with serve_relay(tmp_path, subtitles.env()) as base, client() as http:
        assert subtitles.logins == 0  # lazy: no login before the first call
        status, body, headers = await post(http, base + SEARCH, {
            "imdb_id": "tt0133093", "tmdb_id": 603, "file_hash": "8E245D9679D31E12",
            "file_size": "742086656", "languages": "fr, EN", "query": "The  Matrix",
            "media_type": "Movie", "season_number": 1, "unknown": {"x": 1}})
        assert status == 200 and headers["x-cache"] == "MISS"
        (call,) = subtitles.api_calls()
        assert call.method == "GET" and call.path == "/os/api/v1/subtitles"
        # the original's mapping, in the canonical form OpenSubtitles asks for
        assert call.query_string == ("imdb_id=133093&languages=en,fr&moviebytesize=742086656"
                                     "&moviehash=8e245d9679d31e12&query=the+matrix"
                                     "&tmdb_id=603&type=movie")
        assert call.headers["Api-Key"] == OS_KEY
        assert call.headers["Authorization"].startswith("Bearer ")
        assert call.headers["User-Agent"].startswith("metadata-relay/")
        assert [s["id"] for s in body["subtitles"]] == [7001, 7002]  # the files' ids
        first = body["subtitles"][0]
        assert first == {
            "id": 7001, "language": "en", "format": "srt", "rating": 8.5,
            "download_count": 1234, "release": "Some.Movie.2020.1080p-7001",
            "uploader": "uploader9", "hearing_impaired": False, "foreign_parts_only": False,
            "moviehash_match": True, "feature_type": "Movie", "title": "Some Movie",
            "year": 2020, "imdb_id": 133093, "tmdb_id": 603}
        assert subtitles.logins == 1


async def test_equal_searches_share_one_cache_entry(tmp_path, subtitles):
    async with serve_relay(tmp_path, subtitles.env()) as base, client() as http:
        spellings = [{"imdb_id": "tt0133093", "languages": "en,fr"},
                     {"languages": "FR,en", "imdb_id": 133093},
                     {"imdb_id": "0133093", "languages": " en , fr,en", "file_hash": None,
                      "query": ""}]
        answers = [await post(http, base + SEARCH, doc) for doc in spellings]
        assert [h["x-cache"] for _, _, h in answers] == ["MISS", "HIT", "HIT"]
        assert len({json.dumps(b) for _, b, _ in answers}) == 1
        status, _, headers = await post(http, base + SEARCH, {"imdb_id": 133093})
        assert status == 200 and headers["x-cache"] == "MISS"
    assert len(subtitles.api_calls()) == 2


async def test_bad_search_bodies_are_refused_without_an_upstream_call(tmp_path, subtitles):
    async with serve_relay(tmp_path, subtitles.env()) as base, client() as http:
        for doc in ([], "x", {}, {"languages": "en"}, {"imdb_id": "tt12x"},
                    {"imdb_id": True}, {"tmdb_id": 1.5}, {"file_hash": "xyz"},
                    {"query": "a" * 201}, {"query": ["a"]}, {"imdb_id": "1", "languages": "e"},
                    {"imdb_id": "\N{ARABIC-INDIC DIGIT ONE}"}):
            status, body, _ = await post(http, base + SEARCH, doc)
            assert status == 400, doc
            assert body["error"] == "validation_error" and body["message"], doc
        async with http.post(base + SEARCH, data=b"{not json") as r:
            assert r.status == 400
        async with http.get(base + SEARCH) as r:
            assert r.status == 405
        # the body cap holds while it streams: a chunked body without a length
        async with http.post(base + SEARCH, data=streamed_json(b'{"query": "', 64)) as r:
            assert r.status == 413
            assert (await r.json())["error"] == "payload_too_large"
            assert r.headers["connection"] == "close"
        async with http.post(base + SEARCH, data=b"{" + b" " * 20000 + b"}") as r:
            assert r.status == 413
    assert subtitles.calls == []


async def test_download_url_passes_the_quota_and_is_never_cached(tmp_path, subtitles):
    subtitles.allowed_downloads = 2
    async with serve_relay(tmp_path, subtitles.env()) as base, client() as http:
        for used in (1, 2):
            async with http.get(f"{base}{DOWNLOAD}/7001") as r:
                assert r.status == 200
                assert r.headers["cache-control"] == "no-store"
                assert "x-cache" not in r.headers
                assert await r.json() == {
                    "download_url": "https://www.opensubtitles.com/download/ABCDEF7001/"
                                    "subfile/x.srt",
                    "file_name": "subtitle-7001.srt", "requests_used": used,
                    "requests_remaining": 2 - used, "reset_time_utc": RESET_UTC}
        calls = subtitles.api_calls()
        assert [(c.method, c.path) for c in calls] == [("POST", "/os/api/v1/download")] * 2
        assert json.loads(calls[0].body) == {"file_id": 7001}
        # an exhausted quota: OpenSubtitles' 406, verbatim (mydia reads it as quota_exceeded)
        async with http.get(f"{base}{DOWNLOAD}/0007001") as r:
            assert r.status == 406
            body = await r.json()
            assert body["remaining"] == -1 and body["requests"] == 3
            assert "allowed 2 subtitles" in body["message"]
        assert json.loads(subtitles.api_calls()[-1].body) == {"file_id": 7001}
        for bad in ("x1", "-1", "1.5", "\N{FULLWIDTH DIGIT ONE}"):
            async with http.get(f"{base}{DOWNLOAD}/{bad}") as r:
                assert r.status == 404, bad
        for method in ("POST", "HEAD"):  # a HEAD would spend quota as a GET does
            async with http.request(method, f"{base}{DOWNLOAD}/1") as r:
                assert r.status == 405, method
    assert subtitles.downloads == 3


async def test_expired_token_is_refreshed_once(tmp_path, subtitles):
    async with serve_relay(tmp_path, subtitles.env()) as base, client() as http:
        assert (await post(http, base + SEARCH, {"query": "a"}))[0] == 200
        subtitles.expire_tokens()
        assert (await post(http, base + SEARCH, {"query": "b"}))[0] == 200  # 401 → login → retry
        assert subtitles.logins == 2
        subtitles.expire_tokens()
        async with http.get(f"{base}{DOWNLOAD}/5") as r:
            assert r.status == 200
        assert subtitles.logins == 3 and subtitles.downloads == 1
        # the account stops working: one refresh attempt, then 401, no loop
        subtitles.password = "changed"
        subtitles.expire_tokens()
        status, body, _ = await post(http, base + SEARCH, {"query": "c"})
        assert status == 401 and body["error"] == "upstream_auth_failed"
        assert subtitles.logins == 4
    assert [c.params.get("query") for c in subtitles.api_calls()] == ["a", "b", "b", None,
                                                                      None, "c"]


async def test_concurrent_calls_with_an_expired_token_log_in_once(tmp_path, subtitles):
    async with serve_relay(tmp_path, subtitles.env()) as base, client() as http:
        assert (await post(http, base + SEARCH, {"query": "warm"}))[0] == 200
        subtitles.expire_tokens()
        answers = await asyncio.gather(*(post(http, base + SEARCH, {"query": f"q{i}"})
                                         for i in range(8)))
        assert [a[0] for a in answers] == [200] * 8
    assert subtitles.logins == 2


async def test_rate_limits_pass_through_with_retry_after(tmp_path, subtitles):
    env = {**subtitles.env(), "UPSTREAM_QUEUE_TIMEOUT": "0.5"}
    async with serve_relay(tmp_path, env) as base, client() as http:
        assert (await post(http, base + SEARCH, {"query": "cached"}))[0] == 200
        subtitles.throttle = "30"
        async with http.get(f"{base}{DOWNLOAD}/1") as r:
            assert r.status == 429 and r.headers["retry-after"] == "30"
            assert (await r.json())["error"] == "rate_limited"
        calls = len(subtitles.api_calls())
        # the relay now waits as told: no call goes upstream, the clients hear how long
        status, _, headers = await post(http, base + SEARCH, {"query": "new"})
        assert status == 429 and 25 <= int(headers["retry-after"]) <= 30
        assert len(subtitles.api_calls()) == calls
        # a cached search still answers
        status, _, headers = await post(http, base + SEARCH, {"query": "cached"})
        assert status == 200 and headers["x-cache"] == "HIT"


async def test_not_configured_without_all_three_credentials(tmp_path, subtitles):
    for missing in ("OPENSUBTITLES_API_KEY", "OPENSUBTITLES_USERNAME", "OPENSUBTITLES_PASSWORD"):
        env = {**subtitles.env(), missing: ""}
        async with serve_relay(tmp_path / missing, env) as base, client() as http:
            status, body, _ = await post(http, base + SEARCH, {"query": "x"})
            assert status == 503 and body["error"] == "not_configured"
            async with http.get(f"{base}{DOWNLOAD}/1") as r:
                assert r.status == 503 and (await r.json())["error"] == "not_configured"
    assert subtitles.calls == []


async def test_wrong_api_key_and_outage(tmp_path, subtitles):
    env = {**subtitles.env(), "OPENSUBTITLES_API_KEY": "wrong"}
    async with serve_relay(tmp_path, env) as base, client() as http:
        status, body, _ = await post(http, base + SEARCH, {"query": "x"})
        assert status == 401 and body["error"] == "upstream_auth_failed"
    subtitles.calls.clear()
    async with serve_relay(tmp_path / "b", subtitles.env()) as base, client() as http:
        subtitles.fail_status = 503
        status, body, _ = await post(http, base + SEARCH, {"query": "x"})
        assert status == 502 and body["error"] == "upstream_error"
        async with http.get(f"{base}{DOWNLOAD}/1") as r:
            assert r.status == 502
