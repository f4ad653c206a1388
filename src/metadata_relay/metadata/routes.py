"""The proxy's route table and request resolution: relay path → provider, upstream path,
upstream parameters, TTL, cache key.

A request resolves once (:func:`resolve`) into its canonical form, and the cache key is built
from that form, so spellings of one request share one entry and one upstream call:

- literal paths win over templates; a placeholder matches only its ASCII shape (``{id}`` ASCII
  digits, ``{mbid}`` a UUID, ...) and takes its canonical form (``0550`` → ``550``, an MBID in
  lower case), anything else is a 404 before any upstream call;
- client parameters are forwarded per route (all, none, only ``page``, ...), sorted, and never
  a parameter that names an API key in any spelling (``API_KEY``, ``api_key[]``, ``api-key``,
  ``api_key%00``);
- a route's fixed parameters (MusicBrainz's ``inc=`` sets, ...) are added.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal
from urllib.parse import parse_qsl

from metadata_relay.metadata.cache import cache_key

ProviderName = Literal["tmdb", "tvdb", "musicbrainz", "coverart", "openlibrary", "opensubtitles"]
Param = tuple[str, str]


class TtlClass(Enum):
    IMAGES = "images"
    TRENDING = "trending"
    SEARCH = "search"
    DETAILS = "details"
    SEASON = "season"
    DEFAULT = "default"


class Params(Enum):
    ALL = "all"  # forward every client parameter (never an api_key)
    NONE = "none"  # forward nothing
    PAGE = "page"  # only ``page`` (default 0), TVDB episodes
    MUSIC_SEARCH = "music_search"  # ``query`` and ``type`` required, ``type`` picks the path
    BODY = "body"  # from the JSON body (POST), mapped by the provider


@dataclass(frozen=True, slots=True)
class ProxyRoute:
    template: str  # relay path template, also the metrics label
    provider: ProviderName
    upstream: str  # upstream path template with the same placeholders
    ttl: TtlClass | None  # None: never cached (each request goes upstream)
    params: Params = Params.ALL
    fixed: tuple[Param, ...] = ()  # sent upstream too; values may name placeholders
    methods: tuple[str, ...] = ("GET", "HEAD")

    @property
    def body(self) -> bool:
        return self.params is Params.BODY


@dataclass(frozen=True, slots=True)
class Match:
    route: ProxyRoute
    upstream_path: str
    path: str = ""  # the canonical relay path (the cache key's path)
    ids: dict[str, str] = field(default_factory=dict)  # canonical placeholder values
    error: str | None = None  # a request the relay refuses with 400 (no upstream call)


# a request resolved: its match, the parameters sent upstream, its cache key
Resolved = tuple[Match, list[Param], str] | None

T: ProviderName = "tmdb"
V: ProviderName = "tvdb"
MB: ProviderName = "musicbrainz"
CAA: ProviderName = "coverart"
OL: ProviderName = "openlibrary"
OS: ProviderName = "opensubtitles"
JSON_FMT = ("fmt", "json")
ROUTES: tuple[ProxyRoute, ...] = (
    ProxyRoute("/configuration", T, "/configuration", TtlClass.DEFAULT),
    ProxyRoute("/tmdb/movies/search", T, "/search/movie", TtlClass.SEARCH),
    ProxyRoute("/tmdb/tv/search", T, "/search/tv", TtlClass.SEARCH),
    ProxyRoute("/tmdb/movies/trending", T, "/trending/movie/week", TtlClass.TRENDING),
    ProxyRoute("/tmdb/tv/trending", T, "/trending/tv/week", TtlClass.TRENDING),
    ProxyRoute("/tmdb/movies/popular", T, "/movie/popular", TtlClass.DEFAULT),
    ProxyRoute("/tmdb/movies/upcoming", T, "/movie/upcoming", TtlClass.DEFAULT),
    ProxyRoute("/tmdb/movies/now_playing", T, "/movie/now_playing", TtlClass.DEFAULT),
    ProxyRoute("/tmdb/tv/popular", T, "/tv/popular", TtlClass.DEFAULT),
    ProxyRoute("/tmdb/tv/on_the_air", T, "/tv/on_the_air", TtlClass.DEFAULT),
    ProxyRoute("/tmdb/tv/airing_today", T, "/tv/airing_today", TtlClass.DEFAULT),
    ProxyRoute("/tmdb/list/{id}", T, "/list/{id}", TtlClass.DEFAULT),
    ProxyRoute("/tmdb/movies/{id}", T, "/movie/{id}", TtlClass.DETAILS),
    ProxyRoute("/tmdb/tv/shows/{id}", T, "/tv/{id}", TtlClass.DETAILS),
    ProxyRoute("/tmdb/movies/{id}/images", T, "/movie/{id}/images", TtlClass.IMAGES),
    ProxyRoute("/tmdb/tv/shows/{id}/images", T, "/tv/{id}/images", TtlClass.IMAGES),
    ProxyRoute("/tmdb/tv/shows/{id}/{season}", T, "/tv/{id}/season/{season}", TtlClass.SEASON),
    ProxyRoute("/tvdb/search", V, "/search", TtlClass.SEARCH),
    ProxyRoute("/tvdb/series/{id}", V, "/series/{id}", TtlClass.DEFAULT, Params.NONE),
    ProxyRoute("/tvdb/series/{id}/extended", V, "/series/{id}/extended", TtlClass.DEFAULT),
    ProxyRoute(
        "/tvdb/series/{id}/episodes", V, "/series/{id}/episodes/default", TtlClass.DEFAULT,
        Params.PAGE,
    ),
    ProxyRoute("/tvdb/seasons/{id}", V, "/seasons/{id}", TtlClass.DEFAULT, Params.NONE),
    ProxyRoute("/tvdb/seasons/{id}/extended", V, "/seasons/{id}/extended", TtlClass.DEFAULT),
    ProxyRoute("/tvdb/episodes/{id}", V, "/episodes/{id}", TtlClass.DEFAULT, Params.NONE),
    ProxyRoute("/tvdb/episodes/{id}/extended", V, "/episodes/{id}/extended", TtlClass.DEFAULT),
    ProxyRoute("/tvdb/artwork/{id}", V, "/artwork/{id}", TtlClass.DEFAULT, Params.NONE),
    ProxyRoute("/music/search", MB, "/{type}", TtlClass.SEARCH, Params.MUSIC_SEARCH,
               (JSON_FMT,)),
    ProxyRoute("/music/artist/{mbid}", MB, "/artist/{mbid}", TtlClass.DETAILS, Params.NONE,
               (JSON_FMT, ("inc", "url-rels+genres+release-groups"))),
    ProxyRoute("/music/release/{mbid}", MB, "/release/{mbid}", TtlClass.DETAILS, Params.NONE,
               (JSON_FMT, ("inc", "recordings+artist-credits+labels+release-groups+genres"))),
    ProxyRoute("/music/release-group/{mbid}", MB, "/release-group/{mbid}", TtlClass.DETAILS,
               Params.NONE, (JSON_FMT, ("inc", "releases+artist-credits+genres"))),
    ProxyRoute("/music/recording/{mbid}", MB, "/recording/{mbid}", TtlClass.DETAILS,
               Params.NONE, (JSON_FMT, ("inc", "releases+artist-credits+genres"))),
    ProxyRoute("/music/cover/{mbid}", CAA, "/release/{mbid}/front-500", TtlClass.IMAGES,
               Params.NONE),
    ProxyRoute("/openlibrary/search", OL, "/search.json", TtlClass.SEARCH),
    ProxyRoute("/openlibrary/isbn/{isbn}", OL, "/api/books", TtlClass.DEFAULT, Params.NONE,
               (("bibkeys", "ISBN:{isbn}"), ("format", "json"), ("jscmd", "data"))),
    ProxyRoute("/openlibrary/works/{work}", OL, "/works/{work}.json", TtlClass.DEFAULT,
               Params.NONE),
    ProxyRoute("/openlibrary/authors/{author}", OL, "/authors/{author}.json", TtlClass.DEFAULT,
               Params.NONE),
    ProxyRoute("/api/v1/subtitles/search", OS, "/subtitles", TtlClass.SEARCH, Params.BODY,
               methods=("POST",)),
    # each call spends the account's download quota: GET only (a HEAD would spend it too)
    ProxyRoute("/api/v1/subtitles/download-url/{file_id}", OS, "/download", None, Params.NONE,
               methods=("GET",)),
)
PREFIXES = ("/tmdb/", "/tvdb/", "/music/", "/openlibrary/", "/api/v1/subtitles/")
MUSIC_SEARCH_TYPES = frozenset(("artist", "release", "release-group", "recording"))


def _number(text: str) -> str | None:
    return str(int(text))


def _isbn(text: str) -> str | None:
    """ISBN-10 or ISBN-13 without hyphens, ``X`` upper case; None for anything else."""
    isbn = text.replace("-", "").upper()
    if re.fullmatch(r"[0-9]{9}[0-9X]|[0-9]{13}", isbn, re.ASCII):
        return isbn
    return None


# placeholder → (ASCII pattern, canonical form or None when the value is refused)
_PLACEHOLDERS: dict[str, tuple[str, Callable[[str], str | None]]] = {
    "id": (r"[0-9]{1,20}", _number),
    "season": (r"[0-9]{1,6}", _number),
    "file_id": (r"[0-9]{1,20}", _number),
    "mbid": (r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
             str.lower),
    "isbn": (r"[0-9Xx-]{10,17}", _isbn),
    "work": (r"[Oo][Ll][0-9]{1,12}[Ww]", str.upper),
    "author": (r"[Oo][Ll][0-9]{1,12}[Aa]", str.upper),
}
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def _pattern(template: str) -> re.Pattern[str]:
    parts = _PLACEHOLDER.split(template)  # literal, name, literal, name, ..., literal
    regex = "".join(
        re.escape(part) if i % 2 == 0 else f"(?P<{part}>{_PLACEHOLDERS[part][0]})"
        for i, part in enumerate(parts)
    )
    return re.compile(regex, re.ASCII)


_LITERAL: dict[str, ProxyRoute] = {r.template: r for r in ROUTES if "{" not in r.template}
_PATTERNS: list[tuple[re.Pattern[str], ProxyRoute]] = [
    (_pattern(r.template), r) for r in ROUTES if "{" in r.template
]


def _fill(template: str, ids: dict[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: ids[m.group(1)], template)


def is_proxy_path(path: str) -> bool:
    return path.startswith(PREFIXES) or path == "/configuration"


def match(path: str) -> Match | None:
    """The route for ``path`` with its canonical ids, or None (→ 404, no upstream call)."""
    route = _LITERAL.get(path)
    if route is not None:
        return Match(route, route.upstream, path)
    for pattern, route in _PATTERNS:
        m = pattern.fullmatch(path)
        if m is None:
            continue
        ids: dict[str, str] = {}
        for name, value in m.groupdict().items():
            canonical = _PLACEHOLDERS[name][1](value)
            if canonical is None:
                return None
            ids[name] = canonical
        return Match(route, _fill(route.upstream, ids), _fill(route.template, ids), ids)
    return None


def names_api_key(name: str) -> bool:
    """Whether a parameter name is some spelling of ``api_key`` (case, separators, brackets,
    control or compatibility characters): such parameters are never forwarded."""
    folded = unicodedata.normalize("NFKC", name).casefold()
    return "".join(c for c in folded if c.isascii() and c.isalnum()).startswith("apikey")


def _ascii_number(value: str, low: int, high: int) -> str | None:
    if not re.fullmatch(r"[0-9]{1,9}", value, re.ASCII) or not low <= int(value) <= high:
        return None
    return str(int(value))


def forwarded_params(route: ProxyRoute, query: list[Param]) -> list[Param]:
    """The client parameters sent upstream for ``route`` (sorted; never an api_key)."""
    if route.params is Params.ALL:
        return sorted((k, v) for k, v in query if not names_api_key(k))
    if route.params is Params.PAGE:
        page = next((v for k, v in query if k == "page"), "0")
        return [("page", _ascii_number(page, 0, 999_999) or "0")]
    return []


def _music_search(m: Match, query: list[Param]) -> tuple[Match, list[Param]]:
    """``query`` and ``type`` (one of :data:`MUSIC_SEARCH_TYPES`) are required; ``type``
    becomes the upstream path; ``limit`` (1-100) and ``offset`` are forwarded when numbers."""
    first = {k: v for k, v in reversed(query)}
    text, kind = first.get("query", "").strip(), first.get("type", "")
    if not text or not kind:
        return Match(m.route, m.upstream_path, m.path,
                     error="Missing required parameters: query, type"), []
    if kind not in MUSIC_SEARCH_TYPES:
        return Match(m.route, m.upstream_path, m.path, error="type must be one of "
                     + ", ".join(sorted(MUSIC_SEARCH_TYPES))), []
    params = [("query", text)]
    for name, low, high in (("limit", 1, 100), ("offset", 0, 100_000)):
        value = _ascii_number(first.get(name, ""), low, high)
        if value is not None:
            params.append((name, value))
    return Match(m.route, f"/{kind}", m.path, m.ids), params


def resolve(path: str, qs: bytes) -> Resolved:
    """Route, upstream parameters and cache key for a proxy request, or None (→ 404).

    A body route (``Params.BODY``) resolves with no parameters and an empty key: its
    parameters and key come from the body (:meth:`MetadataProxy.serve_body`)."""
    m = match(path)
    if m is None:
        return None
    query = parse_qsl(qs.decode("latin-1"), keep_blank_values=True) if qs else []
    if m.route.params is Params.MUSIC_SEARCH:
        m, params = _music_search(m, query)
    else:
        params = forwarded_params(m.route, query)
    if m.error is not None or m.route.body:
        return m, [], ""
    params.extend((k, _fill(v, m.ids)) for k, v in m.route.fixed)
    params.sort()
    return m, params, cache_key(m.path, params)
