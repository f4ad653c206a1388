"""The proxy's route table: relay path → provider, upstream path, forwarded parameters, TTL.

Literal paths win over ``{id}`` templates; ``{id}``/``{season}`` match digits only, so a
non-numeric id is a 404 before any upstream call.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Literal

Provider = Literal["tmdb", "tvdb"]


class TtlClass(Enum):
    IMAGES = "images"
    TRENDING = "trending"
    SEARCH = "search"
    DETAILS = "details"
    SEASON = "season"
    DEFAULT = "default"


class Params(Enum):
    ALL = "all"  # forward every client parameter (never api_key)
    NONE = "none"  # forward nothing
    PAGE = "page"  # only ``page`` (default 0), TVDB episodes


@dataclass(frozen=True, slots=True)
class ProxyRoute:
    template: str  # relay path template, also the metrics label
    provider: Provider
    upstream: str  # upstream path template with {id}/{season}
    ttl: TtlClass
    params: Params = Params.ALL


@dataclass(frozen=True, slots=True)
class Match:
    route: ProxyRoute
    upstream_path: str


T: Provider = "tmdb"
V: Provider = "tvdb"
_ROUTES: tuple[ProxyRoute, ...] = (
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
)

ROUTES = _ROUTES
_LITERAL: dict[str, ProxyRoute] = {r.template: r for r in _ROUTES if "{" not in r.template}
_PATTERNS: list[tuple[re.Pattern[str], ProxyRoute]] = [
    (
        re.compile(
            "^" + re.escape(r.template).replace(r"\{id\}", r"(?P<id>\d{1,20})")
            .replace(r"\{season\}", r"(?P<season>\d{1,6})") + "$"
        ),
        r,
    )
    for r in _ROUTES
    if "{" in r.template
]
PREFIXES = ("/tmdb/", "/tvdb/")


def is_proxy_path(path: str) -> bool:
    return path.startswith(PREFIXES) or path == "/configuration"


def match(path: str) -> Match | None:
    """The route for ``path`` and its upstream path, or None (→ 404, no upstream call)."""
    route = _LITERAL.get(path)
    if route is not None:
        return Match(route, route.upstream)
    for pattern, route in _PATTERNS:
        m = pattern.match(path)
        if m is not None:
            groups = m.groupdict()
            upstream = route.upstream.replace("{id}", str(int(groups["id"])))
            if "season" in groups:
                upstream = upstream.replace("{season}", str(int(groups["season"])))
            return Match(route, upstream)
    return None


def forwarded_params(route: ProxyRoute, query: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The client parameters sent upstream (sorted; ``api_key`` never forwarded)."""
    if route.params is Params.NONE:
        return []
    if route.params is Params.PAGE:
        page = next((v for k, v in query if k == "page"), "0")
        return [("page", page if page.isdigit() else "0")]
    return sorted((k, v) for k, v in query if k.lower() != "api_key")
