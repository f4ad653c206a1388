"""MusicBrainz, the Cover Art Archive and Open Library through the relay, against fakes that
refuse what the real services refuse: upstream paths and parameters, answers, the 1 request/s
pace, image redirects, fallback and content types, canonical ids."""

from __future__ import annotations

import asyncio
import itertools
import json
import re

from metadata_relay import __version__
from tests.doubles.fake_music import (
    INC,
    JPEG,
    MB_NOT_FOUND,
    MBID_FRONT_ONLY,
    MBID_HTML,
    MBID_JPEG,
    MBID_LOOP,
    MBID_NONE,
    MBID_PNG,
    PNG,
    FakeMusic,
)
from tests.doubles.fake_openlibrary import UNKNOWN_ISBN, UNKNOWN_WORK, FakeOpenLibrary
from tests.doubles.fake_upstream import odd_json
from tests.relay_server import client, serve_relay

MBID = "5b11f4ce-a62d-471e-81fc-a69a8278c7da"
CONTACT = "https://relay.example.org/contact"


def fast_music(music: FakeMusic, rps: float = 20.0) -> dict[str, str]:
    """The relay paced at ``rps`` and the fake refusing anything faster (tests cannot wait a
    second per MusicBrainz call; the 1/s default has its own test and the P5 benchmark)."""
    music.min_gap = 1.0 / rps * 0.8
    return {**music.env(), "MUSICBRAINZ_MAX_RPS": str(rps), "UPSTREAM_CONTACT": CONTACT}


async def test_musicbrainz_lookups_send_the_original_inc_sets(tmp_path, music: FakeMusic):
    async with serve_relay(tmp_path, fast_music(music)) as base, client() as http:
        for kind, inc in INC.items():
            async with http.get(f"{base}/music/{kind}/{MBID}?inc=aliases&fmt=xml") as r:
                body = await r.read()
                assert r.status == 200, (kind, body)
                assert r.headers["x-cache"] == "MISS"
            call = music.api_calls()[-1]
            assert call.path == f"/ws/2/{kind}/{MBID}"
            # the client's own inc/fmt never reach MusicBrainz; the original's sets do
            assert call.params == {"fmt": "json", "inc": inc}
            assert call.headers["User-Agent"] == f"metadata-relay/{__version__} ( {CONTACT} )"
            assert body == odd_json({"id": MBID, "kind": kind, "params": call.params})
            async with http.get(f"{base}/music/{kind}/{MBID}") as r:
                assert r.headers["x-cache"] == "HIT" and await r.read() == body
        assert len(music.api_calls()) == len(INC)
        async with http.get(f"{base}/music/artist/{MB_NOT_FOUND}") as r:
            assert r.status == 404 and (await r.json())["error"] == "Not Found"
    assert music.refused == 0


async def test_music_search_needs_query_and_type(tmp_path, music: FakeMusic):
    async with serve_relay(tmp_path, fast_music(music)) as base, client() as http:
        for q in ("", "?query=abba", "?type=artist", "?query=&type=artist",
                  "?query=abba&type=label", "?query=abba&type=artist/../x"):
            async with http.get(f"{base}/music/search{q}") as r:
                assert r.status == 400, q
                assert (await r.json())["message"], q
        assert music.api_calls() == []
        async with http.get(f"{base}/music/search?type=release-group&query=Abba%20Gold"
                            "&limit=5&offset=x&dismax=true&api_key=1") as r:
            assert r.status == 200
        (call,) = music.api_calls()
        assert call.path == "/ws/2/release-group"
        assert call.params == {"fmt": "json", "limit": "5", "query": "Abba Gold"}
        # the same search spelled differently shares the entry
        async with http.get(f"{base}/music/search?limit=05&query=Abba%20Gold"
                            "&type=release-group") as r:
            assert r.headers["x-cache"] == "HIT"


async def test_mbids_are_canonical_and_checked(tmp_path, music: FakeMusic):
    async with serve_relay(tmp_path, fast_music(music)) as base, client() as http:
        for spelling in (MBID, MBID.upper(), MBID[:9] + MBID[9:].upper()):
            async with http.get(f"{base}/music/release/{spelling}") as r:
                assert r.status == 200
        assert len(music.api_calls()) == 1
        for bad in ("5b11f4ce", MBID + "0", MBID.replace("-", ""), MBID + "/x",
                    MBID.replace("5", "\N{ARABIC-INDIC DIGIT FIVE}"), MBID.replace("a", "g")):
            async with http.get(f"{base}/music/release/{bad}") as r:
                assert r.status == 404, bad
        assert len(music.api_calls()) == 1


async def test_a_burst_of_lookups_never_exceeds_the_musicbrainz_rate(tmp_path, music: FakeMusic):
    env = fast_music(music, rps=4)
    mbids = [f"{i:08d}-0000-4000-8000-000000000000" for i in range(6)]
    async with serve_relay(tmp_path, env) as base, client() as http:

        async def one(mbid: str) -> int:
            async with http.get(f"{base}/music/artist/{mbid}") as r:
                return r.status

        statuses = await asyncio.gather(*(one(m) for m in mbids))
    assert statuses == [200] * 6  # queued, not refused
    assert music.refused == 0  # MusicBrainz never had to refuse one
    starts = music.mb_starts()
    assert len(starts) == 6
    assert min(b - a for a, b in itertools.pairwise(starts)) >= music.min_gap


async def test_a_burst_past_the_queue_bound_is_refused_at_the_relay(tmp_path, music: FakeMusic):
    env = {**fast_music(music, rps=4), "UPSTREAM_QUEUE_TIMEOUT": "0.6"}
    mbids = [f"{i:08d}-0000-4000-8000-000000000000" for i in range(8)]
    async with serve_relay(tmp_path, env) as base, client() as http:

        async def one(mbid: str) -> tuple[int, str]:
            async with http.get(f"{base}/music/artist/{mbid}") as r:
                return r.status, (await r.json()).get("error", "")

        answers = await asyncio.gather(*(one(m) for m in mbids))
    served = [a for a in answers if a[0] == 200]
    assert 2 <= len(served) < 8
    assert all(a == (503, "upstream_busy") for a in answers if a[0] != 200)
    assert len(music.api_calls()) == len(served) and music.refused == 0


async def test_the_fake_refuses_a_relay_going_too_fast(tmp_path, music: FakeMusic):
    """MusicBrainz's 503 for going too fast reaches the client as a 502, uncached: the fake
    is as unkind as the real service (this is what the pace above prevents)."""
    music.min_gap = 5.0
    env = {**music.env(), "MUSICBRAINZ_MAX_RPS": "100"}
    async with serve_relay(tmp_path, env) as base, client() as http:
        async with http.get(f"{base}/music/artist/{MBID}") as r:
            assert r.status == 200
        async with http.get(f"{base}/music/artist/{MBID_JPEG}") as r:
            assert r.status == 502 and (await r.json())["error"] == "upstream_error"
    assert music.refused == 1


async def test_musicbrainz_defaults_to_one_request_per_second(tmp_path, music: FakeMusic):
    async with serve_relay(tmp_path, music.env()) as base, client() as http:

        async def one(mbid: str) -> int:
            async with http.get(f"{base}/music/recording/{mbid}") as r:
                return r.status

        assert await asyncio.gather(one(MBID), one(MBID_JPEG)) == [200, 200]
    assert music.refused == 0
    first, second = music.mb_starts()
    assert second - first >= 1.0


async def test_cover_art_follows_redirects_and_keeps_the_content_type(tmp_path, music: FakeMusic):
    async with serve_relay(tmp_path, music.env()) as base, client() as http:
        for mbid, kind, data in ((MBID_JPEG, "image/jpeg", JPEG), (MBID_PNG, "image/png", PNG)):
            for cache in ("MISS", "HIT"):
                async with http.get(f"{base}/music/cover/{mbid}",
                                    headers={"accept-encoding": "gzip"}) as r:
                    assert r.status == 200
                    assert r.headers["content-type"] == kind
                    assert r.headers["x-cache"] == cache
                    assert "content-encoding" not in r.headers  # images are not gzipped
                    assert await r.read() == data
            paths = [c.path for c in music.api_calls() if mbid in c.path]
            assert paths == [f"/caa/release/{mbid}/front-500",  # 307 → the archive host,
                             f"/download/mbid-{mbid}/mbid-{mbid}-front-500.jpg",  # 302 →
                             f"/ia/mbid-{mbid}/mbid-{mbid}-front-500.jpg"]
            assert music.api_calls()[-1].headers["Host"].endswith(str(music.ports[1]))
        async with http.head(f"{base}/music/cover/{MBID_PNG}") as r:
            assert r.status == 200 and await r.read() == b""
            assert int(r.headers["content-length"]) == len(PNG)


async def test_cover_art_falls_back_to_front_then_404(tmp_path, music: FakeMusic):
    async with serve_relay(tmp_path, music.env()) as base, client() as http:
        async with http.get(f"{base}/music/cover/{MBID_FRONT_ONLY}") as r:
            assert r.status == 200 and await r.read() == JPEG
        assert [c.path for c in music.api_calls() if c.path.startswith("/caa/")] == [
            f"/caa/release/{MBID_FRONT_ONLY}/front-500", f"/caa/release/{MBID_FRONT_ONLY}/front"]
        music.calls.clear()
        for _ in range(2):
            async with http.get(f"{base}/music/cover/{MBID_NONE}") as r:
                assert r.status == 404
                assert (await r.json())["error"] == "not_found"
        assert [c.path for c in music.api_calls()] == [  # the 404 is cached briefly
            f"/caa/release/{MBID_NONE}/front-500", f"/caa/release/{MBID_NONE}/front"]


async def test_cover_art_refuses_pages_loops_and_oversized_images(tmp_path, music: FakeMusic):
    env = {**music.env(), "CACHE_ENTRY_MAX_BYTES": "2048"}
    async with serve_relay(tmp_path, env) as base, client() as http:
        async with http.get(f"{base}/music/cover/{MBID_HTML}") as r:
            assert r.status == 502  # an HTML page is never served from the relay's domain
            assert "not an image" in (await r.json())["message"]
        async with http.get(f"{base}/music/cover/{MBID_LOOP}") as r:
            assert r.status == 502 and (await r.json())["error"] == "upstream_unavailable"
        assert sum(1 for c in music.api_calls() if MBID_LOOP in c.path) <= 7
        async with http.get(f"{base}/music/cover/{MBID_JPEG}") as r:  # 3 kB over a 2 kB cap
            assert r.status == 502 and (await r.json())["error"] == "upstream_too_large"
        async with http.get(f"{base}/stats") as r:
            assert (await r.json())["cache"]["upstream"]["coverart"]["circuit"] == "closed"


async def test_open_library_routes(tmp_path, books: FakeOpenLibrary):
    async with serve_relay(tmp_path, books.env()) as base, client() as http:
        cases = [
            ("/openlibrary/search?q=dune&author=herbert&api_key=x", "/ol/search.json",
             {"author": "herbert", "q": "dune"}),
            ("/openlibrary/isbn/978-0-441-17271-9", "/ol/api/books",
             {"bibkeys": "ISBN:9780441172719", "format": "json", "jscmd": "data"}),
            ("/openlibrary/isbn/044117271x", "/ol/api/books",
             {"bibkeys": "ISBN:044117271X", "format": "json", "jscmd": "data"}),
            ("/openlibrary/works/ol893415w?fields=x", "/ol/works/OL893415W.json", {}),
            ("/openlibrary/authors/OL79034A", "/ol/authors/OL79034A.json", {}),
        ]
        for relay_path, upstream_path, params in cases:
            books.calls.clear()
            async with http.get(base + relay_path) as r:
                body = await r.read()
                assert r.status == 200, (relay_path, body)
            (call,) = books.api_calls()
            assert (call.path, call.params) == (upstream_path, params), relay_path
            assert re.fullmatch(r"metadata-relay/\S+ \( \S+ \)", call.headers["User-Agent"])
        books.calls.clear()
        for same in ("/openlibrary/isbn/9780441172719", "/openlibrary/works/OL893415W"):
            async with http.get(base + same) as r:
                assert r.headers["x-cache"] == "HIT", same
        async with http.get(f"{base}/openlibrary/isbn/{UNKNOWN_ISBN}") as r:
            assert r.status == 200 and await r.json() == {}
        async with http.get(f"{base}/openlibrary/works/{UNKNOWN_WORK}") as r:
            assert r.status == 404 and (await r.json())["error"] == "notfound"
        for bad in ("/openlibrary/isbn/12345", "/openlibrary/isbn/97804411727199",
                    "/openlibrary/works/OL1A", "/openlibrary/works/123",
                    "/openlibrary/authors/OL\N{FULLWIDTH DIGIT ONE}A", "/openlibrary/books/x"):
            async with http.get(base + bad) as r:
                assert r.status == 404, bad
        assert [c.path for c in books.api_calls()] == ["/ol/api/books",
                                                       f"/ol/works/{UNKNOWN_WORK}.json"]


async def test_keyless_providers_need_no_configuration(tmp_path, music, books):
    async with serve_relay(tmp_path, {**fast_music(music), **books.env()}) as base, \
            client() as http:
        async with http.get(f"{base}/stats") as r:
            upstream = (await r.json())["cache"]["upstream"]
        assert upstream["musicbrainz"]["configured"] and upstream["openlibrary"]["configured"]
        assert not upstream["tmdb"]["configured"] and not upstream["opensubtitles"]["configured"]
        async with http.get(f"{base}/openlibrary/search?q=x") as r:
            assert r.status == 200
        async with http.post(f"{base}/openlibrary/search?q=x") as r:
            assert r.status == 405
        body = json.dumps({"query": "x"})
        async with http.post(f"{base}/api/v1/subtitles/search", data=body) as r:
            assert r.status == 503 and (await r.json())["error"] == "not_configured"
