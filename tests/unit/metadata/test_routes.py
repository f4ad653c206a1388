"""routes.resolve: one canonical form per request (sans-I/O)."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metadata_relay.metadata.providers.opensubtitles import search_params
from metadata_relay.metadata.routes import ROUTES, names_api_key, resolve


def key(path: str, qs: str = "") -> str:
    resolved = resolve(path, qs.encode())
    assert resolved is not None, path
    return resolved[2]


def test_every_route_resolves_and_literal_segments_win() -> None:
    samples = {"id": "1", "season": "2", "file_id": "3", "work": "OL1W", "author": "OL1A",
               "isbn": "9780441172719", "mbid": "76df3287-6cda-33eb-8e9a-044b5e15ffdd"}
    for route in ROUTES:
        path = route.template
        for name, value in samples.items():
            path = path.replace("{" + name + "}", value)
        resolved = resolve(path, b"query=x&type=artist")
        assert resolved is not None and resolved[0].route is route, path
    assert resolve("/tmdb/movies/trending", b"")[0].route.template == "/tmdb/movies/trending"


def test_ids_take_their_canonical_form() -> None:
    assert key("/tmdb/movies/0550") == key("/tmdb/movies/550") == "GET:/tmdb/movies/550"
    assert key("/tmdb/tv/shows/01/002") == "GET:/tmdb/tv/shows/1/2"
    assert resolve("/tmdb/tv/shows/01/002", b"")[0].upstream_path == "/tv/1/season/2"
    mbid = "76DF3287-6CDA-33EB-8E9A-044B5E15FFDD"
    assert key(f"/music/artist/{mbid}", "inc=x") == key(f"/music/artist/{mbid.lower()}")
    assert key("/openlibrary/isbn/0-441-17271-x") == key("/openlibrary/isbn/044117271X")
    assert key("/openlibrary/works/ol1w") == "GET:/openlibrary/works/OL1W"
    for path in ("/tmdb/movies/\u0665\u0665\u0660", "/tmdb/movies/\uff15", "/tmdb/movies/1 ",
                 "/tmdb/movies/" + "1" * 21, "/openlibrary/isbn/123456789",
                 "/openlibrary/isbn/X234567890", "/music/cover/76df3287"):
        assert resolve(path, b"") is None, path


@given(st.text(min_size=1, max_size=8))
def test_only_ascii_digit_ids_match(text: str) -> None:
    resolved = resolve(f"/tmdb/movies/{text}", b"")
    if resolved is None:
        return
    assert (text.isascii() and text.isdigit()) or text in ("trending", "popular", "upcoming",
                                                         "now_playing", "search")


@pytest.mark.parametrize("name", ["api_key", "API_KEY", "api-key", "ApiKey", "api_key[]",
                                  "api_key\x00", " api_key", "api.key", "\uff41pi_key",
                                  "api_key\u200b", "APIKEY2"])
def test_api_key_spellings(name: str) -> None:
    assert names_api_key(name)
    assert key("/tmdb/tv/search", urlencode({"query": "x", name: "forged"})) == key(
        "/tmdb/tv/search", "query=x")


@pytest.mark.parametrize("name", ["apiary", "key", "query", "language", "api"])
def test_other_parameters_are_forwarded(name: str) -> None:
    assert not names_api_key(name)


def test_music_search_is_validated_and_canonical() -> None:
    m, params, k = resolve("/music/search", b"query=abba&type=artist&limit=010&junk=1")
    assert m.error is None and m.upstream_path == "/artist"
    assert params == [("fmt", "json"), ("limit", "10"), ("query", "abba")]
    assert k == "GET:/music/search?fmt=json&limit=10&query=abba"
    for qs in (b"", b"query=abba", b"type=artist", b"query=%20&type=artist",
               b"query=a&type=work", b"query=a&type=..%2Fartist"):
        m, params, k = resolve("/music/search", qs)
        assert m.error and params == [] and k == "", qs


def test_search_bodies_map_to_one_canonical_form() -> None:
    assert search_params({"imdb_id": "tt0133093", "languages": "FR,en,fr", "query": " A  b "}) \
        == search_params({"query": "a b", "languages": "en,fr", "imdb_id": 133093}) \
        == [("imdb_id", "133093"), ("languages", "en,fr"), ("query", "a b")]
    assert search_params({"file_hash": "ABCDEF0123456789", "media_type": "show",
                          "file_size": 10}) == [("moviebytesize", "10"),
                                                ("moviehash", "abcdef0123456789")]
    for bad in ({}, {"media_type": "movie"}, {"tmdb_id": "1e3"}, {"tmdb_id": -1},
                {"imdb_id": None, "query": "  "}, {"languages": ",", "query": "x"},
                {"query": "a\x00b"}, {"query": "x" * 201}):
        with pytest.raises(ValueError):
            search_params(bad)


@given(st.dictionaries(st.sampled_from(["imdb_id", "tmdb_id", "query", "languages",
                                        "file_hash", "file_size", "media_type", "other"]),
                       st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                                 st.text(max_size=30), st.lists(st.integers(), max_size=2))))
def test_search_params_accept_or_refuse_never_crash(doc: dict[str, object]) -> None:
    try:
        params = search_params(doc)
    except ValueError:
        return
    assert params == sorted(params)
    assert all(v == v.lower() and v.isprintable() for _, v in params)
    assert search_params(dict(reversed(list(doc.items())))) == params
