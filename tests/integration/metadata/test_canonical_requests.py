"""Spellings of one request share one cache entry and one upstream call (issue 13 item 11):
ids are ASCII digits in canonical form, and no spelling of ``api_key`` is ever forwarded."""

from __future__ import annotations

import asyncio

from yarl import URL

from tests.doubles.fake_upstream import FakeUpstream
from tests.relay_server import client, serve_relay

ARABIC_550 = "\N{ARABIC-INDIC DIGIT FIVE}\N{ARABIC-INDIC DIGIT FIVE}\N{ARABIC-INDIC DIGIT ZERO}"
FULLWIDTH_550 = "\N{FULLWIDTH DIGIT FIVE}\N{FULLWIDTH DIGIT FIVE}\N{FULLWIDTH DIGIT ZERO}"
SUPERSCRIPT_5 = "\N{SUPERSCRIPT FIVE}"


async def test_id_spellings_make_at_most_one_upstream_call(tmp_path, upstream: FakeUpstream):
    async with serve_relay(tmp_path, upstream.env()) as base, client() as http:
        answers = {}
        for spelling in ("550", "0550", "000000550", ARABIC_550, FULLWIDTH_550,
                         "5" + SUPERSCRIPT_5 + "0", "550%00", "550%20", "+550", "550.0"):
            async with http.get(URL(f"{base}/tmdb/movies/{spelling}", encoded="%" in spelling)
                                ) as r:
                answers[spelling] = r.status
        assert answers == {"550": 200, "0550": 200, "000000550": 200, ARABIC_550: 404,
                           FULLWIDTH_550: 404, "5" + SUPERSCRIPT_5 + "0": 404, "550%00": 404,
                           "550%20": 404, "+550": 404, "550.0": 404}
        async with http.get(f"{base}/tmdb/tv/shows/1399/01") as r:
            assert r.status == 200
        async with http.get(f"{base}/tmdb/tv/shows/01399/1") as r:
            assert r.headers["x-cache"] == "HIT"
    assert [c.path for c in upstream.api_calls()] == ["/3/movie/550", "/3/tv/1399/season/1"]


async def test_tvdb_page_is_ascii_digits(tmp_path, upstream: FakeUpstream):
    async with serve_relay(tmp_path, upstream.env()) as base, client() as http:
        for page in ("3", "03", ARABIC_550[:1], FULLWIDTH_550[:1], "x", "-1", "9" * 12):
            async with http.get(f"{base}/tvdb/series/81189/episodes",
                                params={"page": page}) as r:
                assert r.status == 200, page
    pages = [c.params["page"] for c in upstream.api_calls()]
    assert pages == ["3", "0"]  # 03 is 3; every non-ASCII or out-of-range page is page 0


async def test_no_spelling_of_api_key_is_forwarded(tmp_path, upstream: FakeUpstream):
    variants = ["api_key", "API_KEY", "Api_Key", "api-key", "apiKey", "api_key[]",
                "api_key%00", "api_key%20", "%20api_key", "api%5Fkey", "api_key.x",
                "\N{FULLWIDTH LATIN SMALL LETTER A}pi_key", "api_key\N{ZERO WIDTH SPACE}",
                "api_\N{LATIN SMALL LETTER K WITH DOT BELOW}ey"]
    async with serve_relay(tmp_path, upstream.env()) as base, client() as http:
        for name in variants:
            qs = f"query=lost&{name}=forged"
            async with http.get(URL(f"{base}/tmdb/tv/search?{qs}", encoded="%" in name)) as r:
                assert r.status == 200, name
    calls = upstream.api_calls()
    # every variant but the last (a different letter) is dropped: one call, one entry
    assert [c.params for c in calls] == [
        {"query": "lost", "api_key": upstream.tmdb_key},
        {"query": "lost", "api_\N{LATIN SMALL LETTER K WITH DOT BELOW}ey": "forged",
         "api_key": upstream.tmdb_key}]


async def test_concurrent_spellings_share_one_flight(tmp_path, upstream: FakeUpstream):
    upstream.delay = 0.3
    async with serve_relay(tmp_path, upstream.env()) as base, client() as http:

        async def one(spelling: str) -> int:
            async with http.get(f"{base}/tmdb/movies/{spelling}?api_key=a&API_KEY=b") as r:
                return r.status

        statuses = await asyncio.gather(*(one(s) for s in ("77", "077", "0077") * 10))
    assert set(statuses) == {200}
    assert upstream.count("/3/movie/77") == 1
