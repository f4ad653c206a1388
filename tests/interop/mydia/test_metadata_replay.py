"""Every metadata route mydia c4efb91 calls (mydia-clients.md §1), replayed as its ``Req``
client sends it — one keep-alive connection, ``accept-encoding: gzip``, www-form query
strings in mydia's own parameter order — against fake upstreams, and read back the way mydia
reads it: status, a JSON map only when the content type says JSON, gunzipped bodies."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.doubles.fake_music import INC, JPEG, MBID_JPEG, FakeMusic
from tests.doubles.fake_openlibrary import FakeOpenLibrary
from tests.doubles.fake_opensubtitles import FakeOpenSubtitles
from tests.doubles.fake_upstream import FakeUpstream
from tests.interop.mydia.clients import MYDIA_UA, ReqClient
from tests.relay_server import serve_relay

MBID = "5b11f4ce-a62d-471e-81fc-a69a8278c7da"


@pytest.fixture
def fakes() -> Iterator[tuple[FakeUpstream, FakeMusic, FakeOpenLibrary, FakeOpenSubtitles]]:
    started: list[Any] = []
    try:
        for fake in (FakeUpstream(body_padding=4096), FakeMusic(), FakeOpenLibrary(),
                     FakeOpenSubtitles()):
            started.append(fake.start())
        yield tuple(started)  # type: ignore[misc]
    finally:
        for fake in started:
            fake.stop()


@pytest.fixture
async def mydia(tmp_path: Path, fakes: Any) -> AsyncIterator[tuple[ReqClient, Any]]:
    tmdb, music, books, subs = fakes
    music.min_gap = 0.04  # tests cannot wait a second per MusicBrainz call
    env = {**tmdb.env(), **music.env(), **books.env(), **subs.env(),
           "MUSICBRAINZ_MAX_RPS": "20"}
    async with serve_relay(tmp_path, env) as url:
        client = ReqClient(url)
        try:
            yield client, fakes
        finally:
            await client.close()


def json_map(resp: Any) -> dict[str, Any]:
    """What mydia accepts: status 200 and a decoded map (JSON content type)."""
    assert resp.status == 200, resp
    assert "json" in resp.headers["content-type"]
    assert isinstance(resp.body, dict), resp
    return resp.body


async def test_tmdb_and_tvdb_calls(mydia: tuple[ReqClient, Any]) -> None:
    client, (tmdb, *_) = mydia
    json_map(await client.get("/configuration"))  # test_connection
    search = json_map(await client.get("/tmdb/movies/search", {
        "query": "The Matrix", "language": "en-US", "include_adult": "false", "page": 1,
        "year": 1999}))
    assert search["params"] == {"query": "The Matrix", "language": "en-US",
                                "include_adult": "false", "page": "1", "year": "1999"}
    json_map(await client.get("/tmdb/tv/search", {
        "query": "Dark", "language": "de", "include_adult": "false", "page": 1,
        "first_air_date_year": 2017}))
    details = json_map(await client.get("/tmdb/movies/603", {
        "language": "en-US", "append_to_response": "credits,alternative_titles,videos"}))
    assert details["path"] == "/3/movie/603"
    assert details["params"]["append_to_response"] == "credits,alternative_titles,videos"
    json_map(await client.get("/tmdb/tv/shows/1399", {
        "language": "en-US", "append_to_response": "credits,alternative_titles,videos"}))
    json_map(await client.get("/tmdb/movies/603/images", {
        "language": "en", "include_image_language": "en,null"}))
    json_map(await client.get("/tmdb/tv/shows/1399/images"))
    json_map(await client.get("/tmdb/tv/shows/1399/2", {"language": "en-US"}))
    json_map(await client.get("/tmdb/movies/trending", {"language": "en-US", "page": 1}))
    json_map(await client.get("/tmdb/tv/trending", {"language": "en-US", "page": 2}))
    tvdb = json_map(await client.get("/tvdb/series/81189/extended"))
    assert (tvdb.get("data") or tvdb)["path"] == "/v4/series/81189/extended"  # relay.ex:228
    missing = await client.get("/tmdb/movies/999999999")
    assert missing.status == 404  # mydia: {:error, :not_found}
    # a warm request is answered from the cache, gzipped for Req and gunzipped by it
    again = await client.get("/tmdb/movies/603", {
        "language": "en-US", "append_to_response": "credits,alternative_titles,videos"})
    assert again.headers["x-cache"] == "HIT" and again.body == details
    assert again.headers.get("content-encoding") == "gzip"
    assert client.http.connections_opened == 1  # one keep-alive connection throughout
    assert all(c.headers.get("User-Agent") != MYDIA_UA for c in tmdb.api_calls())


async def test_music_and_books_calls(mydia: tuple[ReqClient, Any]) -> None:
    client, (_, music, _, _) = mydia
    artists = json_map(await client.get("/music/search", {"query": "Radiohead",
                                                          "type": "artist"}))
    assert isinstance(artists, dict)
    json_map(await client.get("/music/search", {"query": "OK Computer", "type": "release"}))
    for kind in INC:
        json_map(await client.get(f"/music/{kind}/{MBID}"))
    cover = await client.get(f"/music/cover/{MBID_JPEG}")
    assert cover.status == 200 and cover.headers["content-type"] == "image/jpeg"
    assert cover.body == JPEG  # not JSON: Req leaves the bytes alone
    json_map(await client.get("/openlibrary/search", {"q": "the", "limit": 1}))
    json_map(await client.get("/openlibrary/search", {"q": "dune"}))
    json_map(await client.get("/openlibrary/isbn/9780441172719"))
    json_map(await client.get("/openlibrary/works/OL893415W"))
    assert music.refused == 0 and client.http.connections_opened == 1


async def test_subtitles_and_crash_reports(mydia: tuple[ReqClient, Any]) -> None:
    client, _ = mydia
    found = json_map(await client.post_json("/api/v1/subtitles/search", {
        "imdb_id": "816692", "languages": "en,es"}))
    assert found["subtitles"] and isinstance(found["subtitles"][0]["id"], int | str)
    by_hash = json_map(await client.post_json("/api/v1/subtitles/search", {
        "file_hash": "8e245d9679d31e12", "file_size": 12909756, "languages": "en"}))
    file_id = by_hash["subtitles"][0]["id"]
    link = json_map(await client.get(f"/api/v1/subtitles/download-url/{file_id}"))
    assert set(link) >= {"download_url", "file_name", "requests_used", "requests_remaining"}
    report = {  # crash_reporter.ex:209-221, sent with Jason.encode!
        "error_type": "RuntimeError", "error_message": "boom in [REDACTED]/file.ex",
        "stacktrace": [{"module": "Mydia.Library", "function": "scan/2",
                        "file": "lib/mydia/library.ex", "line": 42}],
        "version": "0.6.3", "elixir_version": "1.18.1", "otp_version": "27",
        "environment": "prod", "occurred_at": "2026-01-11T16:08:00.123456Z",
        "metadata": {"component": "library"}}
    sent = await client.post_json("/crashes/report", report)
    assert sent.status == 201, sent  # sender.ex: only 201 counts as sent
    bad = await client.post_json("/crashes/report", {"error_message": "no type"})
    assert bad.status == 400
