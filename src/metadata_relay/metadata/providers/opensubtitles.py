"""OpenSubtitles (REST API v1): the relay's account, searched and downloaded for mydia.

Every call carries ``Api-Key`` and a bearer token from ``POST /login`` (username and password),
kept and refreshed by :class:`TokenLogin`. Without all three credentials the routes answer
503 ``not_configured``.

- ``POST /api/v1/subtitles/search`` (JSON body) → ``GET /subtitles``: the body's fields are
  mapped as the original relay did (``file_hash`` → ``moviehash``, ``file_size`` →
  ``moviebytesize``, ``media_type`` → ``type``; ``imdb_id``, ``tmdb_id``, ``languages``,
  ``query`` as they are) into the canonical form OpenSubtitles asks for (parameters sorted,
  values lower case, ids without ``tt`` or leading zeros, languages sorted): that form is the
  cache key, so equal searches share one entry. The answer is reshaped as mydia reads it:
  ``{"subtitles": [{id, language, format, rating, ...}]}``.
- ``GET /api/v1/subtitles/download-url/{file_id}`` → ``POST /download``: never cached (each
  call counts against the account's download quota); ``{download_url, file_name,
  requests_used, requests_remaining}``. An exhausted quota (406) passes through verbatim.

Their 429 + ``Retry-After`` is answered 429 + ``Retry-After`` (mydia waits and retries).
"""

from __future__ import annotations

import json
import re
from typing import Any

from metadata_relay.clock import Clock
from metadata_relay.config import Settings
from metadata_relay.metadata.politeness import UpstreamFailure
from metadata_relay.metadata.providers.base import Provider, upstream_client
from metadata_relay.metadata.providers.logins import TokenLogin, token_from
from metadata_relay.metadata.routes import Match, Param
from metadata_relay.metadata.upstream import UpstreamResponse

TOKEN_LIFETIME = 86400  # when the JWT carries no exp
MAX_QUERY = 200
SEARCH_KEYS = frozenset(("moviehash", "imdb_id", "tmdb_id", "query"))
_HASH = re.compile(r"[0-9a-f]{16}", re.ASCII)
_LANGUAGE = re.compile(r"[a-z]{2,3}(-[a-z]{2,4})?", re.ASCII)
_DIGITS = re.compile(r"[0-9]{1,20}", re.ASCII)


def _field(doc: dict[str, Any], name: str) -> str | None:
    """A field as text (strings and integers), None when absent, null or blank."""
    value = doc.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"{name} must be a string or a number")
    return str(value).strip() or None


def _number(value: str, name: str) -> str:
    if not _DIGITS.fullmatch(value):
        raise ValueError(f"{name} must be a number")
    return str(int(value))


def search_params(doc: dict[str, Any]) -> list[Param]:
    """The ``GET /subtitles`` parameters for a search body, canonical and sorted;
    ``ValueError`` (→ 400) for a body that cannot be one."""
    params: dict[str, str] = {}
    if (moviehash := _field(doc, "file_hash")) is not None:
        if not _HASH.fullmatch(moviehash.lower()):
            raise ValueError("file_hash must be 16 hexadecimal digits")
        params["moviehash"] = moviehash.lower()
    if (size := _field(doc, "file_size")) is not None:
        params["moviebytesize"] = _number(size, "file_size")
    if (kind := _field(doc, "media_type")) is not None and kind.lower() in ("movie", "episode"):
        params["type"] = kind.lower()
    if (imdb := _field(doc, "imdb_id")) is not None:
        params["imdb_id"] = _number(imdb.lower().removeprefix("tt"), "imdb_id")
    if (tmdb := _field(doc, "tmdb_id")) is not None:
        params["tmdb_id"] = _number(tmdb, "tmdb_id")
    if (languages := _field(doc, "languages")) is not None:
        codes = sorted({c.strip().lower() for c in languages.split(",") if c.strip()})
        if not codes or not all(_LANGUAGE.fullmatch(c) for c in codes):
            raise ValueError("languages must be a comma-separated list of language codes")
        params["languages"] = ",".join(codes)
    if (query := _field(doc, "query")) is not None:
        query = " ".join(query.lower().split())
        if len(query) > MAX_QUERY or not query.isprintable():
            raise ValueError(f"query must be printable text of at most {MAX_QUERY} "
                             "characters")
        params["query"] = query
    if not params.keys() & SEARCH_KEYS:
        raise ValueError("one of file_hash, imdb_id, tmdb_id or query is required")
    return sorted(params.items())


def _json(resp: UpstreamResponse) -> Any:
    try:
        return json.loads(resp.body)
    except ValueError:
        raise UpstreamFailure("bad_status", "OpenSubtitles answered something not JSON") \
            from None


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _subtitle(item: dict[str, Any]) -> dict[str, Any]:
    """One search result in the shape mydia reads (``id`` is the first file's id, the one
    ``download-url`` takes)."""
    attrs = _object(item.get("attributes"))
    feature = _object(attrs.get("feature_details"))
    files = attrs.get("files")
    first = _object(files[0]) if isinstance(files, list) and files else {}
    uploader = _object(attrs.get("uploader"))
    return {
        "id": first.get("file_id", item.get("id")),
        "language": attrs.get("language") or "unknown",
        "format": attrs.get("format") or "srt",
        "rating": attrs.get("ratings") or 0.0,
        "download_count": attrs.get("download_count") or 0,
        "release": attrs.get("release") or "",
        "uploader": uploader.get("name") or "unknown",
        "hearing_impaired": bool(attrs.get("hearing_impaired")),
        "foreign_parts_only": bool(attrs.get("foreign_parts_only")),
        "moviehash_match": bool(attrs.get("moviehash_match")),
        "feature_type": feature.get("feature_type"),
        "title": feature.get("title"),
        "year": feature.get("year"),
        "imdb_id": feature.get("imdb_id"),
        "tmdb_id": feature.get("tmdb_id"),
    }


def _reply(doc: dict[str, Any]) -> UpstreamResponse:
    body = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
    return UpstreamResponse(200, body, "application/json")


def search_answer(resp: UpstreamResponse) -> UpstreamResponse:
    if resp.status != 200:
        return resp
    doc = _json(resp)
    data = doc.get("data") if isinstance(doc, dict) else None
    items = data if isinstance(data, list) else []
    return _reply({"subtitles": [_subtitle(i) for i in items if isinstance(i, dict)]})


def download_answer(resp: UpstreamResponse) -> UpstreamResponse:
    if resp.status != 200:
        return resp  # 406 (quota exhausted), 404, ... verbatim
    doc = _json(resp)
    if not isinstance(doc, dict) or not isinstance(doc.get("link"), str):
        raise UpstreamFailure("bad_status", "OpenSubtitles download answer has no link")
    answer = {"download_url": doc["link"], "file_name": doc.get("file_name"),
              "requests_used": doc.get("requests"), "requests_remaining": doc.get("remaining")}
    if "reset_time_utc" in doc:
        answer["reset_time_utc"] = doc["reset_time_utc"]
    return _reply(answer)


class OpenSubtitles(Provider):
    name = "opensubtitles"
    title = "OpenSubtitles"
    passes_rate_limits = True

    def __init__(self, settings: Settings, clock: Clock) -> None:
        super().__init__(upstream_client(settings, clock, self.name,
                                         settings.OPENSUBTITLES_BASE_URL))
        self.api_key = settings.OPENSUBTITLES_API_KEY
        self.username = settings.OPENSUBTITLES_USERNAME
        self.password = settings.OPENSUBTITLES_PASSWORD
        self.login = TokenLogin(self._login, TOKEN_LIFETIME, clock)

    def configured(self) -> bool:
        return bool(self.api_key and self.username and self.password)

    async def _login(self) -> str:
        resp = await self.client.request(
            "POST", "/login", json={"username": self.username, "password": self.password},
            headers={"api-key": self.api_key or ""})
        return token_from(resp, self.title, "token")

    async def _send(self, method: str, path: str, **options: Any) -> UpstreamResponse:
        async def call(token: str) -> UpstreamResponse:
            return await self.client.request(method, path, headers={
                "api-key": self.api_key or "", "authorization": f"Bearer {token}"}, **options)

        return await self.login.send(call)

    async def fetch(self, match: Match, params: list[Param]) -> UpstreamResponse:
        if "file_id" in match.ids:
            resp = await self._send("POST", match.upstream_path,
                                    json={"file_id": int(match.ids["file_id"])})
            return download_answer(resp)
        return search_answer(await self._send("GET", match.upstream_path, params=params))

    def body_params(self, doc: dict[str, Any]) -> list[Param]:
        return search_params(doc)
