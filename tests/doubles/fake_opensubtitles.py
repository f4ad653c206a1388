"""Fake OpenSubtitles REST API v1 (``/os/api/v1``), as unkind as the real one:

- every call needs the ``Api-Key`` (403 otherwise); ``POST /login`` with username and password
  issues a JWT; a call with an expired or unknown token gets 401 (``expire_tokens``);
- ``GET /subtitles`` answers a request whose parameters are not sorted or not lower case
  with a 301 to the canonical URL, as the real API does;
- ``POST /download`` counts against a daily quota (``allowed_downloads``): past it, 406 with
  the real quota message; ``throttle`` makes every call 429 with ``Retry-After``;
- answers in the real shapes (search ``data[].attributes.files[].file_id``, download
  ``link``/``requests``/``remaining``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from tests.doubles.fake_upstream import Call, LoopbackFake, make_jwt

OS_KEY = "os-api-key-789"
OS_USER = "relay-user"
OS_PASSWORD = "relay-password-0"
RESET_UTC = "2026-01-02T13:03:16.000Z"


@dataclass
class FakeOpenSubtitles(LoopbackFake):
    api_key: str = OS_KEY
    username: str = OS_USER
    password: str = OS_PASSWORD
    token_lifetime: float = 86400
    allowed_downloads: int = 20
    downloads: int = 0
    throttle: str | None = None  # Retry-After of a 429 on every call, when set
    logins: int = 0
    valid_tokens: set[str] = field(default_factory=set)
    login_paths: tuple[str, ...] = ("/os/api/v1/login",)

    def env(self) -> dict[str, str]:
        return {"OPENSUBTITLES_BASE_URL": self.url("/os/api/v1"),
                "OPENSUBTITLES_API_KEY": self.api_key,
                "OPENSUBTITLES_USERNAME": self.username,
                "OPENSUBTITLES_PASSWORD": self.password}

    def expire_tokens(self) -> None:
        with self._lock:
            self.valid_tokens.clear()

    def failure(self, status: int, headers: dict[str, str]) -> web.Response:
        return web.json_response({"message": "upstream trouble", "status": status},
                                 status=status, headers=headers)

    async def answer(self, request: web.Request, call: Call) -> web.StreamResponse:
        if request.headers.get("Api-Key") != self.api_key:
            return web.json_response({"message": "You cannot consume this service"},
                                     status=403)
        if self.throttle is not None:
            return web.json_response({"message": "Throttle limit reached. Retry later."},
                                     status=429, headers={"Retry-After": self.throttle})
        path = request.path.removeprefix("/os/api/v1")
        if path == "/login" and request.method == "POST":
            return self._login(call.body)
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        with self._lock:
            valid = token in self.valid_tokens
        if not valid:
            return web.json_response({"message": "invalid token", "status": 401}, status=401)
        if path == "/subtitles" and request.method == "GET":
            return self._search(request, call)
        if path == "/download" and request.method == "POST":
            return self._download(call.body)
        return web.json_response({"message": "not found", "status": 404}, status=404)

    def _login(self, body: bytes) -> web.Response:
        doc = json.loads(body)
        with self._lock:
            self.logins += 1
        if doc.get("username") != self.username or doc.get("password") != self.password:
            return web.json_response({"message": "Error, invalid username/password",
                                      "status": 401}, status=401)
        token = make_jwt(time.time() + self.token_lifetime)
        with self._lock:
            self.valid_tokens.add(token)
        return web.json_response({
            "user": {"allowed_downloads": self.allowed_downloads, "allowed_translations": 5,
                     "level": "Sub leecher", "user_id": 4242, "ext_installed": False,
                     "vip": False},
            "base_url": "api.opensubtitles.com", "token": token, "status": 200})

    def _search(self, request: web.Request, call: Call) -> web.Response:
        pairs = [tuple(p.split("=", 1)) for p in call.query_string.split("&") if p]
        canonical = urlencode(sorted((k, v.lower()) for k, v in call.params.items()))
        if [k for k, _ in pairs] != sorted(k for k, _ in pairs) or any(
                v != v.lower() for _, v in call.params.items()):
            return web.Response(status=301, headers={
                "Location": f"{request.path}?{canonical}"})
        return web.json_response({"total_pages": 1, "total_count": 2, "per_page": 60,
                                  "page": 1, "data": [_result(7001, call.params),
                                                      _result(7002, call.params)]})

    def _download(self, body: bytes) -> web.Response:
        file_id = json.loads(body).get("file_id")
        if not isinstance(file_id, int):
            return web.json_response({"message": "Invalid file_id", "status": 400},
                                     status=400)
        with self._lock:
            self.downloads += 1
            used = self.downloads
        remaining = self.allowed_downloads - used
        message = (f"Your quota will be renewed in 23 hours and 59 minutes ({RESET_UTC}) ")
        if remaining < 0:
            return web.json_response({
                "requests": used, "remaining": remaining,
                "message": f"You have downloaded your allowed {self.allowed_downloads} "
                           f"subtitles for 24h.{message}",
                "reset_time": "23 hours and 59 minutes", "reset_time_utc": RESET_UTC},
                status=406)
        return web.json_response({
            "link": f"https://www.opensubtitles.com/download/ABCDEF{file_id}/subfile/x.srt",
            "file_name": f"subtitle-{file_id}.srt", "requests": used, "remaining": remaining,
            "message": message, "reset_time": "23 hours and 59 minutes",
            "reset_time_utc": RESET_UTC})


def _result(file_id: int, params: dict[str, str]) -> dict[str, Any]:
    return {"id": str(file_id + 100000), "type": "subtitle", "attributes": {
        "subtitle_id": str(file_id + 100000), "language": params.get("languages", "en")[:2],
        "download_count": 1234, "new_download_count": 5, "hearing_impaired": False,
        "hd": True, "fps": 23.976, "votes": 3, "ratings": 8.5, "from_trusted": True,
        "foreign_parts_only": False, "upload_date": "2020-01-01T00:00:00Z",
        "ai_translated": False, "machine_translated": False, "moviehash_match": (
            "moviehash" in params),
        "release": f"Some.Movie.2020.1080p-{file_id}",
        "uploader": {"uploader_id": 9, "name": "uploader9", "rank": "trusted"},
        "feature_details": {"feature_id": 1, "feature_type": "Movie", "year": 2020,
                            "title": "Some Movie", "movie_name": "2020 - Some Movie",
                            "imdb_id": int(params.get("imdb_id", "1")),
                            "tmdb_id": int(params.get("tmdb_id", "2"))},
        "files": [{"file_id": file_id, "cd_number": 1, "file_name": f"x{file_id}.srt"}],
    }}
